//! The server's side of a control session: read the client's identification, let the driver
//! decide whether to go on, check the password, announce the stream, keep the session alive.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::wire::{ControlError, Line, Wire};
use super::{HeartbeatClock, Session, END_OF_STREAM_GRACE, HANDSHAKE_TIMEOUT, PEER_TIMEOUT};
use crate::protocol::frame::{Anchor, Goodbye, GoodbyeReason, Message, SessionParams};
use crate::protocol::handshake::{HandshakeError, ServerHandshake};
use crate::protocol::ident::{check_client_line, Ident, Status, MAX_IDENT_LEN};
use crate::protocol::keys::{ControlCipher, SessionKeys};
use crate::protocol::Password;

/// What the server learns, in order.
#[derive(Debug)]
pub enum ServerEvent {
    /// The client identified itself with a protocol this server speaks. The session waits for
    /// [`ServerSession::accept`] (or [`ServerSession::refuse`]: the server is full, say).
    Identified(Ident),
    /// The session sent this status line and ended: close the connection gracefully (let the
    /// peer read the line first). 400 and 409 are the client's doing; others the driver's.
    Refused(Status),
    /// The client proved the password. The session waits for [`ServerSession::start`].
    Authenticated(Box<SessionKeys>),
    /// The login failed after the server's identification.
    LoginFailed(LoginFailure),
    /// An established session is over.
    Ended(ServerEnd),
}

/// How a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// The client's confirmation did not match: it was told so.
    WrongPassword,
    /// The client broke the protocol.
    Malformed(String),
    /// The client went away.
    Gone(String),
    /// The client was too slow (before its first byte, or before the handshake's end).
    TimedOut,
}

/// Why an established session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerEnd {
    /// This side stopped ([`ServerSession::shutdown`]).
    #[error("server stopping")]
    Stopping,
    /// The stream ended and the client closed (or the grace ran out).
    #[error("end of stream")]
    EndOfStream,
    /// The client said goodbye.
    #[error("said goodbye")]
    SaidGoodbye,
    /// The client closed the connection without a word.
    #[error("connection closed")]
    Closed,
    /// The client was silent too long.
    #[error("silent for {} s", PEER_TIMEOUT.as_secs())]
    Silent,
    /// The connection failed.
    #[error("control channel: {0}")]
    Control(ControlError),
}

struct Streaming {
    heartbeat: HeartbeatClock,
    last_heard: Instant,
    eos_deadline: Option<Instant>,
}

enum State {
    Ident,
    Identified(ServerHandshake),
    Pake(ServerHandshake),
    Confirm(ServerHandshake),
    Authenticated,
    Streaming(Box<Streaming>),
    Ended,
}

/// One server session (see the module docs of [`super`]).
pub struct ServerSession {
    ours: Ident,
    our_line: String,
    password: Password,
    state: State,
    wire: Wire,
    first_byte_by: Instant,
    deadline: Instant,
    events: VecDeque<ServerEvent>,
    /// The client's protocol minor: from 1 on, heartbeats carry the capture anchor.
    client_minor: u16,
    anchor: Option<(u64, Instant)>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("ours", &self.ours)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// A session on a connection accepted at `now`. The client's first byte is due within
    /// `first_byte` (the slot it holds is scarce), its whole line and handshake within
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn new(ours: Ident, password: Password, first_byte: Duration, now: Instant) -> Self {
        Self {
            our_line: ours.to_line(),
            ours,
            password,
            state: State::Ident,
            wire: Wire::default(),
            first_byte_by: now + first_byte.min(HANDSHAKE_TIMEOUT),
            deadline: now + HANDSHAKE_TIMEOUT,
            events: VecDeque::new(),
            client_minor: 0,
            anchor: None,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Refuses the client with `status` (before the server's identification is sent).
    pub fn refuse(&mut self, status: Status) {
        if matches!(self.state, State::Ident | State::Identified(_)) {
            self.wire.send_line(&status.to_line());
            self.state = State::Ended;
            self.events.push_back(ServerEvent::Refused(status));
        }
    }

    /// Goes on after [`ServerEvent::Identified`]: sends the server's identification and takes
    /// the key exchange, which must end by `deadline` if that is later than the usual one (a
    /// client that waited for its turn gets its time back).
    pub fn accept(&mut self, now: Instant, deadline: Option<Instant>) {
        let State::Identified(hs) = std::mem::replace(&mut self.state, State::Ended) else {
            return;
        };
        self.deadline = self.deadline.max(deadline.unwrap_or(self.deadline));
        self.wire.send_line(&self.our_line);
        self.state = State::Pake(hs);
        self.process(now);
    }

    /// Goes on after [`ServerEvent::Authenticated`]: announces the stream.
    pub fn start(&mut self, params: SessionParams, now: Instant) {
        if !matches!(self.state, State::Authenticated) {
            return;
        }
        self.wire.send(&Message::Params(params));
        self.state = State::Streaming(Box::new(Streaming {
            heartbeat: HeartbeatClock::new(now),
            last_heard: now,
            eos_deadline: None,
        }));
        self.process(now);
    }

    /// Tells the client its UDP address is proven.
    pub fn udp_ready(&mut self) {
        if matches!(self.state, State::Streaming(_)) {
            self.wire.send(&Message::UdpReady);
        }
    }

    /// Where the stream is when: the newest frame's position and when its sound was captured,
    /// for the next heartbeat's anchor (clients of protocol 1.1 and later).
    pub fn set_anchor(&mut self, anchor: Option<(u64, Instant)>) {
        self.anchor = anchor;
    }

    /// The stream ended at `end_position`: the client plays out and closes, within
    /// [`END_OF_STREAM_GRACE`].
    pub fn end_of_stream(&mut self, end_position: u64, now: Instant) {
        if let State::Streaming(s) = &mut self.state {
            if s.eos_deadline.is_none() {
                s.eos_deadline = Some(now + END_OF_STREAM_GRACE);
                self.wire.send(&Message::Goodbye(Goodbye {
                    reason: GoodbyeReason::EndOfStream,
                    end_position,
                }));
            }
        }
    }

    /// Ends the session from this side, with a goodbye if it is streaming.
    pub fn shutdown(&mut self) {
        match self.state {
            State::Streaming(_) => {
                self.wire.send(&Message::Goodbye(Goodbye {
                    reason: GoodbyeReason::Shutdown,
                    end_position: 0,
                }));
                self.end(ServerEnd::Stopping);
            }
            State::Ended => {}
            _ => self.fail(LoginFailure::Gone("the server is stopping".into())),
        }
    }

    /// The heartbeat clock, once streaming.
    pub fn heartbeat(&self) -> Option<&HeartbeatClock> {
        match &self.state {
            State::Streaming(s) => Some(&s.heartbeat),
            _ => None,
        }
    }

    fn end(&mut self, why: ServerEnd) {
        self.state = State::Ended;
        self.events.push_back(ServerEvent::Ended(why));
    }

    fn fail(&mut self, why: LoginFailure) {
        self.state = State::Ended;
        self.events.push_back(ServerEvent::LoginFailed(why));
    }

    fn process(&mut self, now: Instant) {
        loop {
            let progressed = match std::mem::replace(&mut self.state, State::Ended) {
                State::Ident => self.on_line(),
                State::Pake(hs) => self.on_pake(hs),
                State::Confirm(hs) => self.on_confirm(hs),
                State::Streaming(s) => self.on_streaming(s, now),
                waiting @ (State::Identified(_) | State::Authenticated) => {
                    self.state = waiting;
                    false
                }
                State::Ended => false,
            };
            if !progressed {
                return;
            }
        }
    }

    /// The client's line (`partial`: all it sent before closing).
    fn on_line(&mut self) -> bool {
        match self.wire.take_line(MAX_IDENT_LEN) {
            Ok(Line::Pending) => {
                self.state = State::Ident;
                false
            }
            Ok(Line::Done(line)) => {
                self.identify(&line);
                false
            }
            Err(_) => {
                self.state = State::Ident;
                self.refuse(Status::BadRequest);
                false
            }
        }
    }

    fn identify(&mut self, line: &[u8]) {
        self.state = State::Ident;
        match check_client_line(line, &self.ours, false) {
            Ok(theirs) => {
                self.client_minor = theirs.minor;
                let client_line = String::from_utf8_lossy(line);
                let hs = ServerHandshake::new(self.password.expose(), &client_line, &self.our_line);
                self.state = State::Identified(hs);
                self.events.push_back(ServerEvent::Identified(theirs));
            }
            Err(status) => self.refuse(status),
        }
    }

    fn on_pake(&mut self, mut hs: ServerHandshake) -> bool {
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Pake(hs);
                false
            }
            Ok(Some(Message::Pake(m))) => match hs.handle_client_pake(&m) {
                Ok(ours) => {
                    self.wire.send(&Message::Pake(ours));
                    self.state = State::Confirm(hs);
                    true
                }
                Err(e) => {
                    self.fail(LoginFailure::Malformed(e.to_string()));
                    false
                }
            },
            Ok(Some(_)) => {
                self.fail(LoginFailure::Malformed("expected the PAKE message".into()));
                false
            }
            Err(e) => {
                self.fail(login_error(e));
                false
            }
        }
    }

    fn on_confirm(&mut self, hs: ServerHandshake) -> bool {
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Confirm(hs);
                false
            }
            Ok(Some(Message::Confirm(tag))) => {
                match hs.handle_client_confirm(&tag) {
                    Ok((server_tag, keys)) => {
                        self.wire.send(&Message::Confirm(server_tag));
                        self.wire.secure(
                            ControlCipher::new(&keys.server_to_client.control),
                            ControlCipher::new(&keys.client_to_server.control),
                        );
                        self.state = State::Authenticated;
                        self.events
                            .push_back(ServerEvent::Authenticated(Box::new(keys)));
                    }
                    Err(HandshakeError::AuthFailed) => {
                        self.wire.send(&Message::AuthFailed);
                        self.fail(LoginFailure::WrongPassword);
                    }
                    Err(e) => self.fail(LoginFailure::Malformed(e.to_string())),
                }
                false
            }
            Ok(Some(_)) => {
                self.fail(LoginFailure::Malformed("expected key confirmation".into()));
                false
            }
            Err(e) => {
                self.fail(login_error(e));
                false
            }
        }
    }

    fn on_streaming(&mut self, mut s: Box<Streaming>, now: Instant) -> bool {
        match self.wire.next_message() {
            Ok(None) => {
                self.state = State::Streaming(s);
                false
            }
            Ok(Some(msg)) => {
                s.last_heard = now;
                match msg {
                    Message::Goodbye(_) => {
                        self.end(ServerEnd::SaidGoodbye);
                        return false;
                    }
                    Message::Heartbeat(h) => s.heartbeat.on_peer(&h, now),
                    // Anything else from a client is out of place and changes nothing.
                    _ => {}
                }
                self.state = State::Streaming(s);
                true
            }
            Err(e) => {
                self.end(ServerEnd::Control(e));
                false
            }
        }
    }
}

fn login_error(e: ControlError) -> LoginFailure {
    match e {
        ControlError::Wire(w) => LoginFailure::Malformed(w.to_string()),
        ControlError::TimedOut => LoginFailure::TimedOut,
        other => LoginFailure::Gone(other.to_string()),
    }
}

impl Session for ServerSession {
    fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if matches!(self.state, State::Ended) {
            return;
        }
        self.wire.push(bytes);
        self.process(now);
    }

    fn handle_closed(&mut self, now: Instant, error: Option<String>) {
        self.process(now);
        let e = ControlError::closed(error);
        match &self.state {
            State::Ended => {}
            State::Ident => {
                // A line cut short by the close is still judged as a line.
                let line = self.wire.take_partial_line();
                if line.is_empty() || e != ControlError::Closed {
                    self.fail(LoginFailure::Gone(e.to_string()));
                } else {
                    self.identify(&line);
                    if matches!(self.state, State::Identified(_)) {
                        self.fail(LoginFailure::Gone(e.to_string()));
                    }
                }
            }
            State::Streaming(s) if s.eos_deadline.is_some() => self.end(ServerEnd::EndOfStream),
            State::Streaming(_) if e == ControlError::Closed => self.end(ServerEnd::Closed),
            State::Streaming(_) => self.end(ServerEnd::Control(e)),
            _ => self.fail(LoginFailure::Gone(e.to_string())),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let client_minor = self.client_minor;
        let our_minor = self.ours.minor;
        let anchor = self.anchor;
        match &mut self.state {
            State::Ended => {}
            State::Streaming(s) => {
                if s.eos_deadline.is_some_and(|d| now >= d) {
                    self.end(ServerEnd::EndOfStream);
                    return;
                }
                if let Some(mut hb) = s.heartbeat.poll(now, 0, 0) {
                    if client_minor >= 1 && our_minor >= 1 {
                        hb.anchor = anchor.map(|(position, at)| Anchor {
                            position,
                            time_us: s.heartbeat.clock_us(at),
                        });
                    }
                    self.wire.send(&Message::Heartbeat(hb));
                }
                if now >= s.last_heard + PEER_TIMEOUT {
                    self.end(ServerEnd::Silent);
                }
            }
            State::Ident if !self.wire.heard_anything() && now >= self.first_byte_by => {
                self.fail(LoginFailure::TimedOut);
            }
            // The driver holds these while it decides; the deadline is its to keep.
            State::Identified(_) | State::Authenticated => {}
            _ if now >= self.deadline => self.fail(LoginFailure::TimedOut),
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Ended | State::Identified(_) | State::Authenticated => None,
            State::Streaming(s) => {
                let mut at = s.heartbeat.next_at().min(s.last_heard + PEER_TIMEOUT);
                if let Some(d) = s.eos_deadline {
                    at = at.min(d);
                }
                Some(at)
            }
            State::Ident if !self.wire.heard_anything() => Some(self.first_byte_by),
            _ => Some(self.deadline),
        }
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.wire.poll_transmit()
    }

    fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }
}
