//! The EchoWarp wire protocol, sans-IO.
//!
//! Nothing in this module reads the clock or touches a socket: callers pass bytes (and, where timing
//! matters, `now`) in and get bytes and decisions out. The engine drives it over real TCP and UDP
//! sockets; tests and fuzz targets drive it directly. `docs/PROTOCOL.md` documents every byte.
#![forbid(unsafe_code)]

pub mod coding;
pub mod datagram;
pub mod frame;
pub mod handshake;
pub mod ident;
pub mod keys;
pub mod password;
pub mod replay;
pub mod session;

pub use password::Password;

/// Protocol major version: peers with a different major cannot talk (409).
pub const PROTOCOL_MAJOR: u16 = 1;
/// Protocol minor version: additions that older peers of the same major can ignore. A peer
/// sends an addition only to a peer whose minor knows it.
///
/// - 1.1: the server's heartbeats carry a capture anchor ([`frame::Anchor`]).
pub const PROTOCOL_MINOR: u16 = 1;
