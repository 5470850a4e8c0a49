//! The client's side of a control session: identify, prove the password, take the stream's
//! parameters, then keep the session alive until it ends.

use std::collections::VecDeque;
use std::time::Instant;

use super::wire::{ControlError, Line, Wire};
use super::{
    HeartbeatClock, Session, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, HELLO_RETRY, PEER_TIMEOUT,
};
use crate::protocol::datagram::{Kind, Sealer};
use crate::protocol::frame::{Goodbye, GoodbyeReason, Heartbeat, Message, SessionParams};
use crate::protocol::handshake::{ClientHandshake, HandshakeError};
use crate::protocol::ident::{Ident, Status, MAX_STATUS_LEN};
use crate::protocol::keys::{ControlCipher, SessionKeys};
use crate::protocol::Password;

/// What the client learns, in order.
#[derive(Debug)]
pub enum ClientEvent {
    /// The server proved the password and announced the stream: open the UDP socket with
    /// these keys and send hellos ([`ClientSession::poll_hello`]).
    Connected {
        /// The stream's format and session id.
        params: SessionParams,
        /// The session's keys.
        keys: Box<SessionKeys>,
    },
    /// The server has the client's UDP address.
    UdpReady,
    /// A heartbeat from the server (its anchor, if any, dates the stream).
    Heartbeat(Heartbeat),
    /// The client sent a heartbeat (a second has passed: a moment for a status line).
    HeartbeatSent(Heartbeat),
    /// The stream ends at this frame: play out up to it. The session now outlives the
    /// connection; the driver ends it when the play-out is done.
    EndOfStream {
        /// The stream's length in frames.
        end_position: u64,
    },
    /// The session is over.
    Ended(ClientEnd),
}

/// Why a client session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientEnd {
    /// The server answered with a status line instead of its identification.
    #[error("the server answered {}", .0.to_line().trim_end())]
    Refused(Status),
    /// The server's first line was no EchoWarp identification (what it said, made printable).
    #[error("not an EchoWarp server (it said {0:?})")]
    NotEchoWarp(String),
    /// Another protocol major.
    #[error("version mismatch: server {server}, client {client}")]
    VersionMismatch {
        /// The server's `major.minor`.
        server: String,
        /// Ours.
        client: String,
    },
    /// The server said the password is wrong.
    #[error("401 Unauthorized (Invalid password)")]
    WrongPassword,
    /// After the client's key confirmation, the server did not prove the password. The server
    /// holds that confirmation and may test one guess with it offline: never retry.
    #[error("the server did not confirm the password ({0})")]
    NotConfirmed(String),
    /// The server broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The connection or the session was lost: try again.
    #[error("{0}")]
    Lost(String),
    /// The server said it is stopping: try again.
    #[error("the server stopped")]
    ServerStopped,
    /// This side closed the session ([`ClientSession::close`]).
    #[error("stopped")]
    Stopped,
}

impl ClientEnd {
    /// Whether trying again is pointless (or, after [`ClientEnd::NotConfirmed`], harmful).
    pub fn is_final(&self) -> bool {
        match self {
            ClientEnd::Refused(s) => *s != Status::ServiceUnavailable,
            ClientEnd::Lost(_) | ClientEnd::ServerStopped => false,
            _ => true,
        }
    }
}

struct Streaming {
    heartbeat: HeartbeatClock,
    last_heard: Instant,
    hello: Sealer,
    next_hello: Instant,
    udp_ready: bool,
    ending: bool,
}

enum State {
    /// Our line is sent; the server's is awaited.
    Ident(Password),
    Pake(ClientHandshake),
    Confirm(ClientHandshake),
    Params(Box<SessionKeys>),
    Streaming(Box<Streaming>),
    Ended,
}

/// One client session (see the module docs of [`super`]).
pub struct ClientSession {
    ours: Ident,
    our_line: String,
    state: State,
    wire: Wire,
    /// Until the parameters arrive, everything must be done by this.
    deadline: Instant,
    events: VecDeque<ClientEvent>,
    counters: (u64, u64),
    /// The transport is gone (after an end of stream the session goes on without it).
    closed: bool,
    /// The end was reported.
    finished: bool,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("ours", &self.ours)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session on a connection just made at `now`: our identification line is the first
    /// thing to send.
    pub fn new(ours: Ident, password: Password, now: Instant) -> Self {
        let our_line = ours.to_line();
        let mut wire = Wire::default();
        wire.send_line(&our_line);
        Self {
            ours,
            our_line,
            state: State::Ident(password),
            wire,
            deadline: now + HANDSHAKE_TIMEOUT,
            events: VecDeque::new(),
            counters: (0, 0),
            closed: false,
            finished: false,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The counters the next heartbeat carries: audio datagrams accepted and lost.
    pub fn set_counters(&mut self, received: u64, lost: u64) {
        self.counters = (received, lost);
    }

    /// The heartbeat clock (round trip, clock offset, latency), once streaming.
    pub fn heartbeat(&self) -> Option<&HeartbeatClock> {
        match &self.state {
            State::Streaming(s) => Some(&s.heartbeat),
            _ => None,
        }
    }

    /// Ends the session from this side: a goodbye if streaming.
    pub fn close(&mut self) {
        if matches!(self.state, State::Streaming(_)) && !self.closed {
            self.wire.send(&Message::Goodbye(Goodbye {
                reason: GoodbyeReason::Shutdown,
                end_position: 0,
            }));
        }
        self.end(ClientEnd::Stopped);
    }

    /// The UDP hello to send now, if one is due, written into `out` (which must hold a hello:
    /// [`crate::protocol::datagram::HEADER_LEN`] + [`crate::protocol::keys::TAG_LEN`] bytes).
    /// Often until the server confirms the address, then once a second to keep NAT mappings.
    pub fn poll_hello(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let State::Streaming(s) = &mut self.state else {
            return None;
        };
        if now < s.next_hello {
            return None;
        }
        s.next_hello = now
            + if s.udp_ready {
                HEARTBEAT_INTERVAL
            } else {
                HELLO_RETRY
            };
        Some(s.hello.seal(Kind::Hello, &[], out))
    }

    /// Ends the session once (the state may already be taken by `process`).
    fn end(&mut self, why: ClientEnd) {
        self.state = State::Ended;
        if !self.finished {
            self.finished = true;
            self.events.push_back(ClientEvent::Ended(why));
        }
    }

    fn ending(&self) -> bool {
        matches!(&self.state, State::Streaming(s) if s.ending)
    }

    /// Handles what has arrived, as far as it goes.
    fn process(&mut self, now: Instant) {
        loop {
            let progressed = match std::mem::replace(&mut self.state, State::Ended) {
                State::Ident(password) => self.on_line(password),
                State::Pake(hs) => self.on_pake(hs),
                State::Confirm(hs) => self.on_confirm(hs),
                State::Params(keys) => self.on_params(keys, now),
                State::Streaming(s) => self.on_streaming(s, now),
                State::Ended => false,
            };
            if !progressed {
                return;
            }
        }
    }

    fn on_line(&mut self, password: Password) -> bool {
        let line = match self.wire.take_line(MAX_STATUS_LEN) {
            Ok(Line::Pending) => {
                self.state = State::Ident(password);
                return false;
            }
            Ok(Line::Done(line)) => line,
            Err(e) => {
                self.end(ClientEnd::Lost(e.to_string()));
                return false;
            }
        };
        if let Some(status) = Status::parse(&line) {
            self.end(ClientEnd::Refused(status));
            return false;
        }
        let Some(theirs) = Ident::parse(&line) else {
            self.end(ClientEnd::NotEchoWarp(
                String::from_utf8_lossy(&line).into_owned(),
            ));
            return false;
        };
        if theirs.major != self.ours.major {
            self.end(ClientEnd::VersionMismatch {
                server: theirs.version(),
                client: self.ours.version(),
            });
            return false;
        }
        let server_line = String::from_utf8_lossy(&line);
        let (hs, msg) = ClientHandshake::start(password.expose(), &self.our_line, &server_line);
        self.wire.send(&Message::Pake(msg));
        self.state = State::Pake(hs);
        true
    }

    fn on_pake(&mut self, mut hs: ClientHandshake) -> bool {
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Pake(hs);
                false
            }
            Ok(Some(Message::Pake(m))) => match hs.handle_server_pake(&m) {
                Ok(tag) => {
                    // From here on the server holds our key confirmation, from which a rogue
                    // server can test one password guess offline: anything but its own
                    // verified confirmation is final (ClientEnd::NotConfirmed).
                    self.wire.send(&Message::Confirm(tag));
                    self.state = State::Confirm(hs);
                    true
                }
                Err(e) => {
                    self.end(ClientEnd::Protocol(e.to_string()));
                    false
                }
            },
            Ok(Some(other)) => {
                self.end(ClientEnd::Protocol(format!(
                    "expected PAKE, got {}",
                    other.kind_name()
                )));
                false
            }
            Err(e) => {
                self.end(handshake_error(e));
                false
            }
        }
    }

    fn on_confirm(&mut self, hs: ClientHandshake) -> bool {
        let unconfirmed = |why: String| ClientEnd::NotConfirmed(why);
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Confirm(hs);
                false
            }
            Ok(Some(Message::Confirm(t))) => match hs.handle_server_confirm(&t) {
                Ok(keys) => {
                    self.wire.secure(
                        ControlCipher::new(&keys.client_to_server.control),
                        ControlCipher::new(&keys.server_to_client.control),
                    );
                    self.state = State::Params(Box::new(keys));
                    true
                }
                Err(HandshakeError::AuthFailed) => {
                    self.end(unconfirmed("its confirmation does not match ours".into()));
                    false
                }
                Err(e) => {
                    self.end(unconfirmed(e.to_string()));
                    false
                }
            },
            Ok(Some(Message::AuthFailed)) => {
                self.end(ClientEnd::WrongPassword);
                false
            }
            Ok(Some(other)) => {
                self.end(unconfirmed(format!(
                    "it sent {} where its confirmation belongs",
                    other.kind_name()
                )));
                false
            }
            Err(e) => {
                self.end(unconfirmed(e.to_string()));
                false
            }
        }
    }

    fn on_params(&mut self, keys: Box<SessionKeys>, now: Instant) -> bool {
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Params(keys);
                false
            }
            Ok(Some(Message::Params(params))) => {
                let hello = Sealer::new(params.mode, params.session_id, &keys.client_to_server);
                self.state = State::Streaming(Box::new(Streaming {
                    heartbeat: HeartbeatClock::new(now),
                    last_heard: now,
                    hello,
                    next_hello: now,
                    udp_ready: false,
                    ending: false,
                }));
                self.events
                    .push_back(ClientEvent::Connected { params, keys });
                true
            }
            Ok(Some(Message::Goodbye(_))) => {
                self.end(ClientEnd::Lost("the server closed the session".into()));
                false
            }
            Ok(Some(other)) => {
                self.end(ClientEnd::Protocol(format!(
                    "expected session parameters, got {}",
                    other.kind_name()
                )));
                false
            }
            Err(e) => {
                self.end(handshake_error(e));
                false
            }
        }
    }

    fn on_streaming(&mut self, mut s: Box<Streaming>, now: Instant) -> bool {
        let msg = match self.wire.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.state = State::Streaming(s);
                return false;
            }
            Err(e) => {
                if s.ending {
                    // The stream is being played out; a broken channel no longer matters.
                    self.closed = true;
                    self.state = State::Streaming(s);
                } else {
                    self.end(ClientEnd::Lost(format!("control channel: {e}")));
                }
                return false;
            }
        };
        s.last_heard = now;
        match msg {
            Message::UdpReady => {
                s.udp_ready = true;
                self.events.push_back(ClientEvent::UdpReady);
            }
            Message::Heartbeat(h) => {
                s.heartbeat.on_peer(&h, now);
                self.events.push_back(ClientEvent::Heartbeat(h));
            }
            Message::Goodbye(Goodbye {
                reason: GoodbyeReason::EndOfStream,
                end_position,
            }) => {
                s.ending = true;
                self.events
                    .push_back(ClientEvent::EndOfStream { end_position });
            }
            Message::Goodbye(Goodbye {
                reason: GoodbyeReason::Shutdown,
                ..
            }) => {
                self.end(ClientEnd::ServerStopped);
                return false;
            }
            // Handshake messages out of place: a confused server; ignored as before.
            _ => {}
        }
        self.state = State::Streaming(s);
        true
    }
}

/// A failure before the session is established: malformed frames are the server's fault; the
/// rest is a lost connection, worth another try.
fn handshake_error(e: ControlError) -> ClientEnd {
    match e {
        ControlError::Wire(w) => ClientEnd::Protocol(w.to_string()),
        other => ClientEnd::Lost(format!("handshake: {other}")),
    }
}

impl Session for ClientSession {
    fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if matches!(self.state, State::Ended) || self.closed {
            return;
        }
        self.wire.push(bytes);
        self.process(now);
    }

    fn handle_closed(&mut self, now: Instant, error: Option<String>) {
        // What arrived before the close still counts.
        self.process(now);
        if self.ending() {
            self.closed = true;
            return;
        }
        let e = ControlError::closed(error);
        let why = match &self.state {
            State::Ident(_) => ClientEnd::Lost(e.to_string()),
            State::Pake(_) | State::Params(_) => handshake_error(e),
            State::Confirm(_) if e == ControlError::Closed => {
                ClientEnd::NotConfirmed("it closed the connection".into())
            }
            State::Confirm(_) => ClientEnd::NotConfirmed(e.to_string()),
            State::Streaming(_) => ClientEnd::Lost(format!("control channel: {e}")),
            State::Ended => return,
        };
        self.end(why);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let (received, lost) = self.counters;
        let why = match &mut self.state {
            State::Ended => return,
            State::Streaming(s) => {
                if let Some(hb) = s.heartbeat.poll(now, received, lost) {
                    if !self.closed {
                        self.wire.send(&Message::Heartbeat(hb));
                    }
                    self.events.push_back(ClientEvent::HeartbeatSent(hb));
                }
                if s.ending || now < s.last_heard + PEER_TIMEOUT {
                    return;
                }
                ClientEnd::Lost(format!(
                    "timed out: the server was silent for {} s",
                    PEER_TIMEOUT.as_secs()
                ))
            }
            _ if now < self.deadline => return,
            State::Ident(_) => {
                ClientEnd::Lost("timed out waiting for the server's identification".into())
            }
            State::Confirm(_) => ClientEnd::NotConfirmed(format!(
                "it was silent for {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
            State::Pake(_) | State::Params(_) => handshake_error(ControlError::TimedOut),
        };
        self.end(why);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Ended => None,
            State::Streaming(s) => {
                let mut at = s.heartbeat.next_at().min(s.next_hello);
                if !s.ending {
                    at = at.min(s.last_heard + PEER_TIMEOUT);
                }
                Some(at)
            }
            _ => Some(self.deadline),
        }
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.closed {
            return None;
        }
        self.wire.poll_transmit()
    }

    fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }
}
