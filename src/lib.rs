//! EchoWarp: live audio from one computer to another over an authenticated, encrypted session.
//!
//! Layers (DESIGN.md §1): [`protocol`] is pure and sans-IO, the control sessions included
//! ([`protocol::session`]); [`audio`] puts devices and files behind the [`audio::Source`] and
//! [`audio::Sink`] traits and holds the client's playout ([`audio::playout`]); [`engine`] drives
//! both over real sockets behind an [`engine::EngineHandle`]; [`store`] keeps the profile and the
//! ban list; [`ui`] holds the front ends.
#![warn(missing_docs)]

pub mod audio;
pub mod engine;
pub mod protocol;
pub mod store;
pub mod ui;
