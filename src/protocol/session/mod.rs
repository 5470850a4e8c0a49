//! The control session, both sides, as sans-IO state machines (in the manner of quinn-proto).
//!
//! A [`ClientSession`] or [`ServerSession`] owns everything about one control connection that is
//! not I/O: the identification lines, the key exchange and confirmation, the session
//! parameters, heartbeats, goodbye and end of stream, and every deadline of DESIGN.md §3.3-3.5.
//! It never reads a clock or touches a socket. Whoever drives it (the engine over TCP, the
//! in-memory harness of the tests, a fuzz target) passes bytes and `now` in through
//! [`Session::handle_input`], [`Session::handle_closed`] and [`Session::handle_timeout`], and
//! takes out bytes to send ([`Session::poll_transmit`]), the next instant it wants to be woken
//! ([`Session::poll_timeout`]) and events (`poll_event` on each side).
//!
//! Decisions that need the rest of the program (is this address banned, is the server full,
//! which parameters does the stream have) are the driver's: the server session stops at
//! [`ServerEvent::Identified`] and [`ServerEvent::Authenticated`] until it is told how to go on.

mod backoff;
mod client;
mod heartbeat;
mod server;
mod wire;

#[cfg(test)]
mod sim;

use std::time::{Duration, Instant};

pub use backoff::Backoff;
pub use client::{ClientEnd, ClientEvent, ClientSession};
pub use heartbeat::HeartbeatClock;
pub use server::{LoginFailure, ServerEnd, ServerEvent, ServerSession};
pub use wire::ControlError;

/// Heartbeat period on the control channel (DESIGN.md §3.5).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A peer silent this long is gone.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Identification and handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnection delay; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a client repeats its UDP hello until the server confirms its address.
pub const HELLO_RETRY: Duration = Duration::from_millis(200);
/// How long a server waits, after announcing the end of the stream, for the client to play it
/// out and close.
pub const END_OF_STREAM_GRACE: Duration = Duration::from_secs(10);

/// What both sides have in common for a driver: bytes and time in, bytes and a wake-up time out.
pub trait Session {
    /// Bytes arrived from the peer (any split of the stream).
    fn handle_input(&mut self, now: Instant, bytes: &[u8]);
    /// The connection ended: the peer closed it (`error` is `None`) or it failed.
    fn handle_closed(&mut self, now: Instant, error: Option<String>);
    /// Time passed: call at (or after) [`Session::poll_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// When the session next needs [`Session::handle_timeout`]; `None` once it has ended.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next bytes to send, in order.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// Whether the session has ended (its last bytes may still be waiting in
    /// [`Session::poll_transmit`]).
    fn is_ended(&self) -> bool;
}
