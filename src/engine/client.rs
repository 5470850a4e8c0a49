//! The client: connects, authenticates, plays, and reconnects with backoff when the session is
//! lost (DESIGN.md §3.5). 401 and 409 end it at once; 403 too.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::Pump;
use super::playout::Player;
use super::{
    sock, Command, Common, ConnectConfig, EngineError, Event, Inbox, Outcome, PlaybackConfig, Stats,
};
use crate::protocol::datagram::HEADER_LEN;
use crate::protocol::frame::{Heartbeat, SessionParams};
use crate::protocol::ident::{Ident, Status};
use crate::protocol::keys::{SessionKeys, TAG_LEN};
use crate::protocol::session::{
    Backoff, ClientEnd, ClientEvent, ClientSession, HeartbeatClock, HANDSHAKE_TIMEOUT,
};
/// Longest play-out after an end of stream (the jitter buffer holds far less).
const END_PLAYOUT_LIMIT: Duration = Duration::from_secs(10);

/// Where to connect and how to log in.
struct Dial {
    connect: ConnectConfig,
    common: Common,
}

enum Failure {
    /// Stop trying: 401, 403, 409, a broken server.
    Fatal(EngineError),
    /// Try again after a pause.
    Retry(String),
}

/// An established session: its connection and state machine, and what it announced.
struct Established {
    pump: Pump,
    session: ClientSession,
    peer: SocketAddr,
    params: SessionParams,
    keys: Box<SessionKeys>,
}

enum SessionEnd {
    Stopped,
    StreamEnded,
    Lost(String),
}

/// What a session that ended before streaming means for the client: try again, or not.
fn failure(why: ClientEnd, peer: SocketAddr) -> Failure {
    let fatal = Failure::Fatal;
    match why {
        ClientEnd::Refused(status) => match status {
            Status::Forbidden => fatal(EngineError::Banned),
            Status::PasswordRequired => fatal(EngineError::PasswordRequired),
            Status::Unauthorized => fatal(EngineError::Unauthorized),
            Status::Conflict { server, client } => {
                fatal(EngineError::VersionMismatch { server, client })
            }
            Status::ServiceUnavailable => {
                Failure::Retry("503 Service Unavailable (Server is full)".into())
            }
            Status::BadRequest => fatal(EngineError::Protocol(
                "the server answered 400 Bad Request".into(),
            )),
        },
        ClientEnd::NotEchoWarp(said) => fatal(EngineError::Protocol(format!(
            "{peer} is not an EchoWarp server (it said {said:?})"
        ))),
        ClientEnd::VersionMismatch { server, client } => {
            fatal(EngineError::VersionMismatch { server, client })
        }
        ClientEnd::WrongPassword => fatal(EngineError::Unauthorized),
        ClientEnd::NotConfirmed(why) => fatal(EngineError::NotConfirmed(why)),
        ClientEnd::Protocol(why) => fatal(EngineError::Protocol(why)),
        end @ (ClientEnd::Lost(_) | ClientEnd::ServerStopped | ClientEnd::Stopped) => {
            Failure::Retry(end.to_string())
        }
    }
}

/// How long a client looks for a server by its announced name.
const FIND_BY_NAME: Duration = Duration::from_secs(3);

fn connect(dial: &Dial) -> Result<Established, Failure> {
    let server = &dial.connect.server;
    let addrs: Vec<SocketAddr> = match (server.as_str(), dial.connect.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        // Not a host name: a server's name as it announces itself on the local network.
        Err(e) => match super::discovery::find_by_name(server, FIND_BY_NAME) {
            Ok(found) => {
                tracing::debug!("{server:?} is at {:?} port {}", found.addrs, found.port);
                found
                    .addrs
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, found.port))
                    .collect()
            }
            Err(by_name) => {
                return Err(Failure::Retry(format!(
                    "cannot resolve {server}: {e}; {by_name}"
                )))
            }
        },
    };
    let mut last = Failure::Retry(format!("{server} has no address"));
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, HANDSHAKE_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Failure::Retry(e.to_string()),
        }
    }
    let stream = stream.ok_or(last)?;
    let peer = stream
        .peer_addr()
        .map_err(|e| Failure::Retry(e.to_string()))?;
    let mut pump = Pump::new(stream);
    let claim = dial.common.claim;
    let ours = Ident::ours(claim.major).claiming_minor(claim.minor);
    let mut session = ClientSession::new(ours, dial.common.password.clone(), Instant::now());
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Connected { params, keys } => {
                    return Ok(Established {
                        pump,
                        session,
                        peer,
                        params,
                        keys,
                    })
                }
                ClientEvent::Ended(why) => {
                    pump.flush(&mut session);
                    return Err(failure(why, peer));
                }
                _ => {}
            }
        }
        pump.turn(&mut session, None);
    }
}

pub(crate) fn run(
    connect: ConnectConfig,
    play: PlaybackConfig,
    common: Common,
    commands: &Inbox,
    events: &Sender<Event>,
) -> Result<Outcome, EngineError> {
    let mut player = Player::new(
        play.device,
        play.host,
        play.device_rate,
        play.target_latency,
    );
    // A playout thread that ends (the stream played out, or its device failed) says so.
    player.bell = commands.bell.clone();
    player.events = Some(events.clone());
    let dial = Dial { connect, common };
    let result = run_inner(&dial, commands, events, &mut player);
    let finished = player.finish();
    tracing::info!(
        "received {} bytes of datagrams in all",
        player
            .stats
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    match (result, finished) {
        (Ok(o), Ok(())) => Ok(o),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

fn run_inner(
    dial: &Dial,
    commands: &Inbox,
    events: &Sender<Event>,
    player: &mut Player,
) -> Result<Outcome, EngineError> {
    let attempts = dial.connect.reconnect_attempts;
    let mut backoff = Backoff::new(attempts);
    loop {
        let attempt = backoff.attempt();
        let _ = events.send(Event::Connecting {
            attempt,
            of: attempts,
        });
        let last = match connect(dial) {
            Ok(session) => {
                backoff.connected();
                match stream(dial, session, commands, events, player)? {
                    SessionEnd::Stopped => return Ok(Outcome::Stopped),
                    SessionEnd::StreamEnded => return Ok(Outcome::StreamEnded),
                    SessionEnd::Lost(why) => {
                        tracing::warn!("connection lost: {why}; reconnecting");
                        let _ = events.send(Event::ConnectionLost(why.clone()));
                        why
                    }
                }
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(why)) => {
                tracing::info!("attempt {attempt}: {why}");
                if backoff.exhausted() {
                    return Err(EngineError::ConnectFailed {
                        addr: format!("{}:{}", dial.connect.server, dial.connect.port),
                        attempts: attempt,
                        last: why,
                    });
                }
                why
            }
        };
        let pause = backoff.next_delay();
        tracing::debug!("next attempt in {pause:?} ({last})");
        if let Some(Command::Stop) = commands.recv_timeout(pause) {
            return Ok(Outcome::Stopped);
        }
    }
}

fn stream(
    dial: &Dial,
    e: Established,
    commands: &Inbox,
    events: &Sender<Event>,
    player: &mut Player,
) -> Result<SessionEnd, EngineError> {
    let Established {
        mut pump,
        session: mut s,
        peer,
        params: p,
        keys,
    } = e;
    let udp = sock::client_udp(peer, dial.common.socket_buffer_size)
        .map_err(EngineError::io("UDP socket"))?;
    let hello_socket = udp.try_clone().map_err(EngineError::io("UDP socket"))?;
    let sink = player.begin(p, &keys.server_to_client, udp)?;
    drop(keys);
    let format = format!(
        "{} Hz {} ch {} {}",
        p.sample_rate,
        p.channels,
        p.codec_name(),
        p.mode.name()
    );
    tracing::info!("connected to {peer}: {format}, playing on {sink}");
    let _ = events.send(Event::Connected {
        peer,
        format: format.clone(),
    });

    let mut last_stats = (0u64, Instant::now());
    // The server's last word on where the stream was when (protocol 1.1 servers).
    let mut anchor: Option<crate::protocol::frame::Anchor> = None;
    let mut ending_since: Option<Instant> = None;
    let mut dg = [0u8; HEADER_LEN + TAG_LEN];
    let end = loop {
        if let Some(Command::Stop) = commands.try_recv() {
            s.close();
            pump.flush(&mut s);
            break SessionEnd::Stopped;
        }
        if ending_since.is_some() && player.is_done() {
            break SessionEnd::StreamEnded;
        }
        if ending_since.is_some_and(|t: Instant| t.elapsed() > END_PLAYOUT_LIMIT) {
            tracing::warn!(
                "play-out did not finish in {} s; stopping",
                END_PLAYOUT_LIMIT.as_secs()
            );
            break SessionEnd::StreamEnded;
        }
        if ending_since.is_none() && player.is_done() {
            // The playout thread stopped on its own: a sink failure.
            player.end_session()?;
            break SessionEnd::Lost("playout stopped".into());
        }
        while let Some(n) = s.poll_hello(Instant::now(), &mut dg) {
            if let Err(e) = hello_socket.send(&dg[..n]) {
                tracing::debug!("hello: {e}");
            }
        }
        s.set_counters(
            player.stats.received.load(Ordering::Relaxed),
            player.stats.lost.load(Ordering::Relaxed),
        );
        let mut ended = None;
        while let Some(event) = s.poll_event() {
            match event {
                ClientEvent::Heartbeat(h) => anchor = h.anchor.or(anchor),
                ClientEvent::HeartbeatSent(hb) => {
                    let now = Instant::now();
                    let secs = now.duration_since(last_stats.1).as_secs_f64().max(1e-3);
                    let bytes = player.stats.bytes.load(Ordering::Relaxed);
                    let kbps = (bytes.saturating_sub(last_stats.0)) as f64 * 8.0 / 1e3 / secs;
                    last_stats = (bytes, now);
                    let clock = s.heartbeat();
                    let _ = events.send(Event::Stats(stats(
                        player,
                        &format,
                        peer,
                        hb,
                        kbps,
                        clock,
                        anchor,
                        p.sample_rate,
                    )));
                }
                ClientEvent::EndOfStream { end_position } => {
                    tracing::info!("end of stream at frame {end_position}; playing out");
                    player.set_end(end_position);
                    ending_since = Some(Instant::now());
                }
                ClientEvent::Ended(why) => ended = Some(why),
                ClientEvent::UdpReady | ClientEvent::Connected { .. } => {}
            }
        }
        if let Some(why) = ended {
            break SessionEnd::Lost(why.to_string());
        }
        // Asleep until a heartbeat or hello is due, unless the server speaks or the bell rings
        // (a command, or the playout thread ended).
        pump.turn(&mut s, commands.bell.as_deref());
    };
    player.end_session()?;
    Ok(end)
}

/// The status line's figures, once a second.
#[allow(clippy::too_many_arguments)]
fn stats(
    player: &Player,
    format: &str,
    peer: SocketAddr,
    hb: Heartbeat,
    kbps: f64,
    clock: Option<&HeartbeatClock>,
    anchor: Option<crate::protocol::frame::Anchor>,
    rate: u32,
) -> Stats {
    let st = &player.stats;
    let us = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e3;
    Stats {
        peer: peer.to_string(),
        format: format.to_owned(),
        packets: hb.received,
        lost: hb.lost,
        dropped: st.dropped.load(Ordering::Relaxed),
        depth: st.depth.load(Ordering::Relaxed),
        clients: 0,
        late: st.late.load(Ordering::Relaxed),
        trimmed: st.trimmed.load(Ordering::Relaxed),
        depth_ms: us(&st.depth_us),
        target_ms: us(&st.target_us),
        jitter_ms: us(&st.jitter_us),
        drift_ppm: st.drift_ppm.load(Ordering::Relaxed) as f64,
        kbps,
        rtt_ms: clock
            .and_then(HeartbeatClock::rtt)
            .map(|d| d.as_secs_f64() * 1e3),
        latency_ms: clock
            .zip(anchor)
            .zip(st.played.read())
            .and_then(|((c, a), played)| c.latency(a, played, rate))
            .map(|d| d.as_secs_f64() * 1e3),
        device_ms: st.device_delay.get().map(|d| d.as_secs_f64() * 1e3),
        clock_offset_ms: clock
            .and_then(HeartbeatClock::offset_us)
            .map(|o| o as f64 / 1e3),
        device: st.device.get(),
        // A client sends no audio yet.
        muted: false,
    }
}
