//! One client's control connection on the server: a thread that pumps bytes between the socket
//! and a [`ServerSession`], and answers the session's questions from the server's state (the
//! ban list, the pre-auth guard, the number of clients, the media thread).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::super::conn::Pump;
use super::super::guard::{is_local_network, Slot};
use super::super::Event;
use super::media::{MediaCommand, NOT_ENDED};
use super::Shared;
use crate::audio::wake::Wake;
use crate::protocol::frame::{Direction, SessionParams};
use crate::protocol::ident::Status;
use crate::protocol::keys::SessionKeys;
use crate::protocol::session::{LoginFailure, ServerEvent, ServerSession};
use crate::store::bans::canonical;

/// Time for the handshake after a slow-lane turn.
const TURN_GRACE: Duration = Duration::from_secs(2);

/// Serves one accepted connection until its login fails or its session ends. The slot is held
/// through a refusal's linger too, so a refused address keeps at most `per_addr` threads busy.
pub(super) fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr, mut slot: Slot) {
    let ip = canonical(peer.ip());
    let mut pump = Pump::new(stream);
    let mut s = ServerSession::new(
        shared.ident.clone(),
        shared.password.clone(),
        shared.guard.limits().first_bytes,
        Instant::now(),
    );
    let banned = {
        let mut list = shared.bans();
        if let Err(e) = list.refresh() {
            tracing::warn!("ban list: {e}");
        }
        list.contains(ip)
    };
    if banned {
        tracing::info!("refused banned {ip}");
        s.refuse(Status::Forbidden);
    } else if shared.password.is_empty() && !shared.listen.allow_anonymous && !is_local_network(ip)
    {
        tracing::warn!(
            "{peer}: refused: without a password, clients are served from local networks only (set a password, or --allow-anonymous)"
        );
        s.refuse(Status::PasswordRequired);
    }
    let Some((keys, minor)) = login(shared, &mut pump, &mut s, (peer, ip)) else {
        return;
    };
    shared.guard.succeeded(ip, Instant::now());
    slot.release();
    if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.listen.max_clients {
        shared.active.fetch_sub(1, Ordering::AcqRel);
        tracing::info!("{peer}: server became full during the handshake");
        return;
    }
    let reason = session(shared, &mut pump, &mut s, (peer, ip), keys, minor);
    shared.active.fetch_sub(1, Ordering::AcqRel);
    tracing::info!("{peer} left: {reason}");
    let _ = shared.events.send(Event::ClientLeft { peer, reason });
}

/// Runs the login to its end: the keys and the client's protocol minor, or `None` when it was
/// refused or failed (counted against the address where that is the client's doing).
fn login(
    shared: &Shared,
    pump: &mut Pump,
    s: &mut ServerSession,
    (peer, ip): (SocketAddr, IpAddr),
) -> Option<(Box<SessionKeys>, u16)> {
    let mut minor = 0;
    loop {
        while let Some(event) = s.poll_event() {
            match event {
                ServerEvent::Identified(theirs) => {
                    minor = theirs.minor;
                    if shared.active.load(Ordering::Acquire) >= shared.listen.max_clients {
                        s.refuse(Status::ServiceUnavailable);
                        continue;
                    }
                    // Once failures pile up, a handshake waits for its turn before anything
                    // is answered.
                    match shared.guard.turn(ip, Instant::now()) {
                        Ok(None) => s.accept(Instant::now(), None),
                        Ok(Some(at)) => {
                            tracing::debug!("{peer}: slow lane, {:?}", at - Instant::now());
                            if !wait_turn(shared, at) {
                                return None;
                            }
                            s.accept(Instant::now(), Some(at + TURN_GRACE));
                        }
                        Err(()) => {
                            tracing::info!(
                                "{peer}: refused for now: too many failed logins of late"
                            );
                            s.refuse(Status::ServiceUnavailable);
                        }
                    }
                }
                ServerEvent::Refused(status) => {
                    tracing::info!("{peer}: {}", status.to_line().trim_end());
                    if let Status::Conflict { .. } = status {
                        let detail = status.to_line().trim_end().to_owned();
                        let _ = shared
                            .events
                            .send(Event::VersionMismatch { peer: ip, detail });
                    }
                    if matches!(status, Status::BadRequest | Status::Conflict { .. }) {
                        shared.fail(ip);
                    }
                    pump.linger(s);
                    return None;
                }
                ServerEvent::LoginFailed(why) => {
                    pump.flush(s);
                    match why {
                        LoginFailure::WrongPassword => {
                            tracing::warn!("{peer}: wrong password");
                            shared.fail(ip);
                        }
                        LoginFailure::Malformed(why) => {
                            tracing::info!("{peer}: handshake failed: {why}");
                            shared.fail(ip);
                        }
                        LoginFailure::Gone(why) => {
                            tracing::debug!("{peer}: left during the login: {why}");
                        }
                        LoginFailure::TimedOut => {
                            tracing::debug!("{peer}: login timed out");
                            shared.guard.timed_out(ip, Instant::now());
                        }
                    }
                    return None;
                }
                ServerEvent::Authenticated(keys) => {
                    pump.flush(s);
                    return Some((keys, minor));
                }
                ServerEvent::Ended(_) => return None,
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            return None;
        }
        pump.turn(s, None);
    }
}

/// Sleeps until a slow-lane turn at `at`; false if the server stops first.
fn wait_turn(shared: &Shared, at: Instant) -> bool {
    while let Some(left) = at.checked_duration_since(Instant::now()) {
        if shared.stop.load(Ordering::Acquire) {
            return false;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
    !shared.stop.load(Ordering::Acquire)
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Session ids only need to be unpredictable enough to tell sessions apart; the keys protect them.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = t.to_be_bytes();
    }
    u32::from_be_bytes(b)
}

/// Runs one authenticated session until it ends; returns why it ended.
fn session(
    shared: &Shared,
    pump: &mut Pump,
    s: &mut ServerSession,
    peer: (SocketAddr, IpAddr),
    keys: Box<SessionKeys>,
    minor: u16,
) -> String {
    let params = SessionParams {
        direction: Direction::ServerToClient,
        codec: shared.capture.codec.wire(),
        mode: shared.listen.mode,
        sample_rate: shared.format.sample_rate,
        channels: shared.format.channels as u8,
        frame_frames: shared.frame_frames,
        session_id: random_u32(),
    };
    // The media thread and the engine ring this when they have news for the session.
    let bell = Wake::new().map(Arc::new);
    if let Some(b) = &bell {
        shared.session_bells().insert(params.session_id, b.clone());
    }
    let reason = run_session(shared, pump, s, peer, keys, params, bell.as_deref(), minor);
    shared.session_bells().remove(&params.session_id);
    let _ = shared.media.send(MediaCommand::Remove {
        session_id: params.session_id,
    });
    reason
}

/// [`session`]'s loop: it wakes for a heartbeat, a message from the client, or `bell`, and
/// tells the session what the server's other threads have news of.
#[allow(clippy::too_many_arguments)]
fn run_session(
    shared: &Shared,
    pump: &mut Pump,
    s: &mut ServerSession,
    (peer, ip): (SocketAddr, IpAddr),
    keys: Box<SessionKeys>,
    params: SessionParams,
    bell: Option<&Wake>,
    minor: u16,
) -> String {
    // Register with the media thread before announcing: the client's hello may follow at once.
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let _ = shared.media.send(MediaCommand::Add {
        params,
        ip,
        keys,
        ready: ready_tx,
    });
    s.start(params, Instant::now());
    pump.flush(s);
    if let Some(ServerEvent::Ended(why)) = s.poll_event() {
        return format!("could not send session parameters: {why}");
    }
    tracing::info!(
        "{peer} joined (session {:08x}, protocol 1.{minor})",
        params.session_id
    );
    let _ = shared.events.send(Event::ClientJoined(peer));
    loop {
        if shared.stop.load(Ordering::Acquire) {
            s.shutdown();
        }
        let end = shared.end_position.load(Ordering::Acquire);
        if end != NOT_ENDED {
            s.end_of_stream(end, Instant::now());
        }
        if ready_rx.try_recv().is_ok() {
            s.udp_ready();
        }
        s.set_anchor(shared.anchor.read());
        while let Some(event) = s.poll_event() {
            if let ServerEvent::Ended(why) = event {
                pump.flush(s);
                return why.to_string();
            }
        }
        pump.turn(s, bell);
    }
}
