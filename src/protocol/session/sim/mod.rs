//! Two sessions joined by an in-memory connection on a simulated clock: every outcome of a
//! login and a session, with delay and stalls, and no socket or real time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod outcomes;

use super::*;
use crate::protocol::frame::{Codec, Direction, SecurityMode, SessionParams};
use crate::protocol::ident::{Ident, Status};
use crate::protocol::Password;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn params() -> SessionParams {
    SessionParams {
        direction: Direction::ServerToClient,
        codec: Codec::PcmS16,
        mode: SecurityMode::Encrypted,
        sample_rate: 48_000,
        channels: 2,
        frame_frames: 240,
        session_id: 0x5e55_1011,
    }
}

/// One direction of a connection: bytes arrive `delay` after they are sent, in order; while
/// `stalled`, nothing is delivered (TCP retransmitting into a dead path), and what was sent
/// arrives when it ends.
#[derive(Default)]
struct Link {
    delay: Duration,
    queue: VecDeque<(Instant, Option<Vec<u8>>)>,
    stalled_until: Option<Instant>,
    closed: bool,
    /// Every byte ever sent, for inspection.
    log: Vec<u8>,
}

impl Link {
    fn send(&mut self, now: Instant, bytes: Vec<u8>) {
        self.log.extend_from_slice(&bytes);
        self.queue.push_back((now + self.delay, Some(bytes)));
    }

    /// The sender closed: the peer learns it after everything sent before.
    fn close(&mut self, now: Instant) {
        if !self.closed {
            self.closed = true;
            self.queue.push_back((now + self.delay, None));
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        let (at, _) = self.queue.front()?;
        Some(self.stalled_until.map_or(*at, |s| s.max(*at)))
    }

    fn take(&mut self, now: Instant) -> Option<Option<Vec<u8>>> {
        if self.next_arrival()? <= now {
            self.queue.pop_front().map(|(_, b)| b)
        } else {
            None
        }
    }
}

/// How the server's driver decides (what the engine decides from its ban list and guard).
#[derive(Clone, Copy, Default)]
struct Policy {
    /// Refuse before reading anything (a banned address: 403).
    refuse_at_once: Option<fn() -> Status>,
    /// Refuse after the identification (a full server: 503).
    refuse_identified: Option<fn() -> Status>,
    /// Never start the session after authentication (a driver that stalls).
    hold_after_auth: bool,
}

struct Pair {
    now: Instant,
    client: ClientSession,
    server: ServerSession,
    c2s: Link,
    s2c: Link,
    policy: Policy,
    client_events: Vec<(Instant, ClientEvent)>,
    server_events: Vec<(Instant, ServerEvent)>,
}

impl Pair {
    fn new(now: Instant, client_pw: &str, server_pw: &str, delay: Duration) -> Self {
        Self::with(
            now,
            client_pw,
            server_pw,
            delay,
            Ident::ours(None),
            Policy::default(),
        )
    }

    fn with(
        now: Instant,
        client_pw: &str,
        server_pw: &str,
        delay: Duration,
        client_ident: Ident,
        policy: Policy,
    ) -> Self {
        let client = ClientSession::new(client_ident, Password::from(client_pw), now);
        let mut server = ServerSession::new(
            Ident::ours(None),
            Password::from(server_pw),
            Duration::from_secs(1),
            now,
        );
        if let Some(status) = policy.refuse_at_once {
            server.refuse(status());
        }
        let link = || Link {
            delay,
            ..Link::default()
        };
        Self {
            now,
            client,
            server,
            c2s: link(),
            s2c: link(),
            policy,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Runs until `until`, or until both sides have ended and their bytes are delivered.
    fn run_until(&mut self, until: Instant) {
        let mut hello = [0u8; 64];
        loop {
            self.flush();
            while let Some(e) = self.client.poll_event() {
                self.client_events.push((self.now, e));
            }
            while let Some(e) = self.server.poll_event() {
                self.decide(&e);
                self.server_events.push((self.now, e));
            }
            self.flush();
            // Hellos go to the media socket, which this harness does not model.
            while self.client.poll_hello(self.now, &mut hello).is_some() {}
            let next = [
                self.c2s.next_arrival(),
                self.s2c.next_arrival(),
                self.client.poll_timeout(),
                self.server.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&t| t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(b) = self.c2s.take(now) {
                match b {
                    Some(b) => self.server.handle_input(now, &b),
                    None => self.server.handle_closed(now, None),
                }
            }
            while let Some(b) = self.s2c.take(now) {
                match b {
                    Some(b) => self.client.handle_input(now, &b),
                    None => self.client.handle_closed(now, None),
                }
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Moves what each side wrote onto the links; a side that ended closes its end.
    fn flush(&mut self) {
        while let Some(b) = self.client.poll_transmit() {
            self.c2s.send(self.now, b);
        }
        while let Some(b) = self.server.poll_transmit() {
            self.s2c.send(self.now, b);
        }
        if self.client.is_ended() {
            self.c2s.close(self.now);
        }
        if self.server.is_ended() {
            self.s2c.close(self.now);
        }
    }

    /// The server driver's part.
    fn decide(&mut self, e: &ServerEvent) {
        match e {
            ServerEvent::Identified(_) => match self.policy.refuse_identified {
                Some(status) => self.server.refuse(status()),
                None => self.server.accept(self.now, None),
            },
            ServerEvent::Authenticated(_) if !self.policy.hold_after_auth => {
                self.server.start(params(), self.now);
            }
            _ => {}
        }
    }

    fn client_end(&self) -> Option<(Instant, &ClientEnd)> {
        self.client_events.iter().find_map(|(t, e)| match e {
            ClientEvent::Ended(why) => Some((*t, why)),
            _ => None,
        })
    }

    fn server_end(&self) -> Option<(Instant, &ServerEvent)> {
        self.server_events
            .iter()
            .find(|(_, e)| {
                matches!(
                    e,
                    ServerEvent::Ended(_) | ServerEvent::LoginFailed(_) | ServerEvent::Refused(_)
                )
            })
            .map(|(t, e)| (*t, e))
    }

    fn connected(&self) -> bool {
        self.client_events
            .iter()
            .any(|(_, e)| matches!(e, ClientEvent::Connected { .. }))
    }
}
