//! The client: connects, authenticates, plays, and reconnects with backoff when the session is
//! lost (DESIGN.md §3.5). 401 and 409 end it at once; 403 too.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::{wait_until, Conn, ConnError, HeartbeatClock};
use super::playout::Player;
use super::{
    sock, ClientConfig, Command, EngineError, Event, Inbox, Outcome, Stats, BACKOFF_MAX,
    BACKOFF_START, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, PEER_TIMEOUT,
};
use crate::protocol::datagram::{Kind, Sealer, HEADER_LEN};
use crate::protocol::frame::{Goodbye, GoodbyeReason, Message, SessionParams};
use crate::protocol::handshake::{ClientHandshake, HandshakeError};
use crate::protocol::ident::{Ident, Status, MAX_STATUS_LEN};
use crate::protocol::keys::{ControlCipher, TAG_LEN};

/// How often the client repeats its hello until the server confirms its UDP address.
const HELLO_RETRY: Duration = Duration::from_millis(200);
/// Longest play-out after an end of stream (the jitter buffer holds far less).
const END_PLAYOUT_LIMIT: Duration = Duration::from_secs(10);

enum Failure {
    /// Stop trying: 401, 403, 409, a broken server.
    Fatal(EngineError),
    /// Try again after a pause.
    Retry(String),
}

struct Session {
    conn: Conn,
    peer: SocketAddr,
    params: SessionParams,
    keys: crate::protocol::keys::SessionKeys,
}

enum SessionEnd {
    Stopped,
    StreamEnded,
    Lost(String),
}

fn retry(e: impl std::fmt::Display) -> Failure {
    Failure::Retry(e.to_string())
}

fn connect(cfg: &ClientConfig) -> Result<Session, Failure> {
    let addrs: Vec<SocketAddr> = (cfg.server.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Retry(format!("cannot resolve {}: {e}", cfg.server)))?
        .collect();
    let mut last = Failure::Retry(format!("{} has no address", cfg.server));
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
    let peer = stream.peer_addr().map_err(retry)?;
    let mut conn = Conn::new(stream);
    let ours = Ident::ours(cfg.protocol_major).claiming_minor(cfg.protocol_minor);
    let our_line = ours.to_line();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    conn.write_all(our_line.as_bytes()).map_err(retry)?;
    let line = conn
        .read_line(MAX_STATUS_LEN, deadline)
        .map_err(|e| match e {
            ConnError::TimedOut => {
                Failure::Retry("timed out waiting for the server's identification".into())
            }
            other => retry(other),
        })?;
    if let Some(status) = Status::parse(&line) {
        return Err(match status {
            Status::Forbidden => Failure::Fatal(EngineError::Banned),
            Status::PasswordRequired => Failure::Fatal(EngineError::PasswordRequired),
            Status::Unauthorized => Failure::Fatal(EngineError::Unauthorized),
            Status::Conflict { server, client } => {
                Failure::Fatal(EngineError::VersionMismatch { server, client })
            }
            Status::ServiceUnavailable => {
                Failure::Retry("503 Service Unavailable (Server is full)".into())
            }
            Status::BadRequest => Failure::Fatal(EngineError::Protocol(
                "the server answered 400 Bad Request".into(),
            )),
        });
    }
    let theirs = Ident::parse(&line).ok_or_else(|| {
        Failure::Fatal(EngineError::Protocol(format!(
            "{peer} is not an EchoWarp server (it said {:?})",
            String::from_utf8_lossy(&line)
        )))
    })?;
    if theirs.major != ours.major {
        return Err(Failure::Fatal(EngineError::VersionMismatch {
            server: theirs.version(),
            client: ours.version(),
        }));
    }
    let server_line = String::from_utf8_lossy(&line).into_owned();

    let lost = |e: ConnError| match e {
        ConnError::Wire(w) => Failure::Fatal(EngineError::Protocol(w.to_string())),
        other => Failure::Retry(format!("handshake: {other}")),
    };
    let (mut hs, msg) = ClientHandshake::start(cfg.password.expose(), &our_line, &server_line);
    conn.send(&Message::Pake(msg)).map_err(lost)?;
    let tag = match conn.expect(deadline).map_err(lost)? {
        Message::Pake(m) => hs
            .handle_server_pake(&m)
            .map_err(|e| Failure::Fatal(EngineError::Protocol(e.to_string())))?,
        other => {
            return Err(Failure::Fatal(EngineError::Protocol(format!(
                "expected PAKE, got {other:?}"
            ))))
        }
    };
    // From here on the server holds our key confirmation, from which a rogue server can test
    // one password guess offline. Anything but its own verified confirmation is therefore
    // final: a client that retried would hand it another guess with every attempt.
    let unconfirmed = |why: String| Failure::Fatal(EngineError::NotConfirmed(why));
    if let Err(e) = conn.send(&Message::Confirm(tag)) {
        return Err(unconfirmed(format!("sending our confirmation: {e}")));
    }
    let keys = match conn.expect(deadline) {
        Ok(Message::Confirm(t)) => hs.handle_server_confirm(&t).map_err(|e| match e {
            HandshakeError::AuthFailed => {
                unconfirmed("its confirmation does not match ours".into())
            }
            other => unconfirmed(other.to_string()),
        })?,
        Ok(Message::AuthFailed) => return Err(Failure::Fatal(EngineError::Unauthorized)),
        Ok(other) => {
            return Err(unconfirmed(format!(
                "it sent {} where its confirmation belongs",
                other.kind_name()
            )))
        }
        Err(ConnError::Closed) => return Err(unconfirmed("it closed the connection".into())),
        Err(ConnError::TimedOut) => {
            return Err(unconfirmed(format!(
                "it was silent for {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )))
        }
        Err(e) => return Err(unconfirmed(e.to_string())),
    };
    conn.secure(
        ControlCipher::new(&keys.client_to_server.control),
        ControlCipher::new(&keys.server_to_client.control),
    );
    let params = match conn.expect(deadline).map_err(lost)? {
        Message::Params(p) => p,
        Message::Goodbye(_) => return Err(Failure::Retry("the server closed the session".into())),
        other => {
            return Err(Failure::Fatal(EngineError::Protocol(format!(
                "expected session parameters, got {other:?}"
            ))))
        }
    };
    Ok(Session {
        conn,
        peer,
        params,
        keys,
    })
}

pub(crate) fn run(
    cfg: ClientConfig,
    commands: &Inbox,
    events: &Sender<Event>,
) -> Result<Outcome, EngineError> {
    let mut player = Player::new(cfg.device.clone(), cfg.device_rate, cfg.target_latency);
    // A playout thread that ends (the stream played out, or its device failed) says so.
    player.bell = commands.bell.clone();
    let result = run_inner(&cfg, commands, events, &mut player);
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
    cfg: &ClientConfig,
    commands: &Inbox,
    events: &Sender<Event>,
    player: &mut Player,
) -> Result<Outcome, EngineError> {
    let mut attempt = 0u32;
    let mut backoff = BACKOFF_START;
    loop {
        attempt += 1;
        let _ = events.send(Event::Connecting {
            attempt,
            of: cfg.reconnect_attempts,
        });
        let last = match connect(cfg) {
            Ok(session) => {
                attempt = 0;
                backoff = BACKOFF_START;
                match stream(cfg, session, commands, events, player)? {
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
                if cfg.reconnect_attempts != 0 && attempt >= cfg.reconnect_attempts {
                    return Err(EngineError::ConnectFailed {
                        addr: format!("{}:{}", cfg.server, cfg.port),
                        attempts: attempt,
                        last: why,
                    });
                }
                why
            }
        };
        tracing::debug!("next attempt in {backoff:?} ({last})");
        if let Some(Command::Stop) = commands.recv_timeout(backoff) {
            return Ok(Outcome::Stopped);
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn stream(
    cfg: &ClientConfig,
    mut s: Session,
    commands: &Inbox,
    events: &Sender<Event>,
    player: &mut Player,
) -> Result<SessionEnd, EngineError> {
    let p = s.params;
    let udp = sock::client_udp(s.peer, cfg.socket_buffer_size)
        .map_err(|e| EngineError::Io(format!("UDP socket: {e}")))?;
    let hello_socket = udp
        .try_clone()
        .map_err(|e| EngineError::Io(format!("UDP socket: {e}")))?;
    let sink = player.begin(p, &s.keys.server_to_client, udp)?;
    let mut hello = Sealer::new(p.mode, p.session_id, &s.keys.client_to_server);
    let format = format!(
        "{} Hz {} ch {} {}",
        p.sample_rate,
        p.channels,
        p.codec_name(),
        p.mode.name()
    );
    tracing::info!("connected to {}: {format}, playing on {sink}", s.peer);
    let _ = events.send(Event::Connected {
        peer: s.peer,
        format: format.clone(),
    });

    let mut last_heard = Instant::now();
    let mut heartbeat = HeartbeatClock::new(Instant::now());
    let mut last_stats = (0u64, Instant::now());
    let format_rate = s.params.sample_rate;
    // The server's last word on where the stream was when (protocol 1.1 servers).
    let mut anchor: Option<crate::protocol::frame::Anchor> = None;
    let mut next_hello = Instant::now();
    let mut udp_ready = false;
    let mut ending = false;
    let mut ending_since: Option<Instant> = None;
    let mut dg = [0u8; HEADER_LEN + TAG_LEN];
    let end = loop {
        let now = Instant::now();
        if let Some(Command::Stop) = commands.try_recv() {
            let _ = s.conn.send(&Message::Goodbye(Goodbye {
                reason: GoodbyeReason::Shutdown,
                end_position: 0,
            }));
            break SessionEnd::Stopped;
        }
        if ending && player.is_done() {
            break SessionEnd::StreamEnded;
        }
        if ending_since.is_some_and(|t: Instant| t.elapsed() > END_PLAYOUT_LIMIT) {
            tracing::warn!(
                "play-out did not finish in {} s; stopping",
                END_PLAYOUT_LIMIT.as_secs()
            );
            break SessionEnd::StreamEnded;
        }
        if now >= next_hello {
            // Until the server confirms, hello often; then once a second to keep NAT mappings open.
            next_hello = now
                + if udp_ready {
                    HEARTBEAT_INTERVAL
                } else {
                    HELLO_RETRY
                };
            let n = hello.seal(Kind::Hello, &[], &mut dg);
            if let Err(e) = hello_socket.send(&dg[..n]) {
                tracing::debug!("hello: {e}");
            }
        }
        let received = player.stats.received.load(Ordering::Relaxed);
        let lost = player.stats.lost.load(Ordering::Relaxed);
        if let Some(hb) = heartbeat.poll(now, received, lost) {
            if let Err(e) = s.conn.send(&Message::Heartbeat(hb)) {
                if !ending {
                    break SessionEnd::Lost(format!("control channel: {e}"));
                }
            }
            let st = &player.stats;
            let us = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e3;
            let bytes = st.bytes.load(Ordering::Relaxed);
            let secs = now.duration_since(last_stats.1).as_secs_f64().max(1e-3);
            let kbps = (bytes.saturating_sub(last_stats.0)) as f64 * 8.0 / 1e3 / secs;
            last_stats = (bytes, now);
            let rtt_ms = heartbeat.rtt().map(|d| d.as_secs_f64() * 1e3);
            let depth_ms = us(&st.depth_us);
            let device_ms = st.device_delay.get().map(|d| d.as_secs_f64() * 1e3);
            let _ = events.send(Event::Stats(Stats {
                peer: s.peer.to_string(),
                format: format.clone(),
                packets: hb.received,
                lost: hb.lost,
                dropped: st.dropped.load(Ordering::Relaxed),
                depth: st.depth.load(Ordering::Relaxed),
                clients: 0,
                late: st.late.load(Ordering::Relaxed),
                trimmed: st.trimmed.load(Ordering::Relaxed),
                depth_ms,
                target_ms: us(&st.target_us),
                jitter_ms: us(&st.jitter_us),
                drift_ppm: st.drift_ppm.load(Ordering::Relaxed) as f64,
                kbps,
                rtt_ms,
                latency_ms: anchor
                    .zip(st.played.read())
                    .and_then(|(a, played)| heartbeat.latency(a, played, format_rate))
                    .map(|d| d.as_secs_f64() * 1e3),
                device_ms,
                clock_offset_ms: heartbeat.offset_us().map(|o| o as f64 / 1e3),
            }));
        }
        // Asleep until a heartbeat or hello is due, unless the server speaks or the bell rings
        // (a command, or the playout thread ended).
        let bell = commands.bell.as_deref();
        let due = heartbeat.next_at().min(next_hello);
        match s.conn.recv_until(wait_until(now, due, bell), bell) {
            Ok(Some(msg)) => {
                last_heard = Instant::now();
                match msg {
                    Message::UdpReady => udp_ready = true,
                    Message::Heartbeat(h) => {
                        heartbeat.on_peer(&h, Instant::now());
                        anchor = h.anchor.or(anchor);
                    }
                    Message::Goodbye(Goodbye {
                        reason: GoodbyeReason::EndOfStream,
                        end_position,
                    }) => {
                        tracing::info!("end of stream at frame {end_position}; playing out");
                        player.set_end(end_position);
                        ending = true;
                        ending_since = Some(Instant::now());
                    }
                    Message::Goodbye(Goodbye {
                        reason: GoodbyeReason::Shutdown,
                        ..
                    }) => {
                        break SessionEnd::Lost("the server stopped".into());
                    }
                    other => tracing::debug!("unexpected {other:?}"),
                }
            }
            Ok(None) => {}
            Err(ConnError::Closed) if ending => {
                // The server may close first; keep playing out what is buffered.
                if player.is_done() {
                    break SessionEnd::StreamEnded;
                }
                std::thread::sleep(Duration::from_millis(5));
                last_heard = Instant::now();
            }
            Err(e) if !ending => break SessionEnd::Lost(format!("control channel: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        if !ending && last_heard.elapsed() > PEER_TIMEOUT {
            break SessionEnd::Lost(format!(
                "timed out: the server was silent for {} s",
                PEER_TIMEOUT.as_secs()
            ));
        }
        if player.is_done() && !ending {
            // The playout thread stopped on its own: a sink failure.
            player.end_session()?;
            break SessionEnd::Lost("playout stopped".into());
        }
    };
    player.end_session()?;
    Ok(end)
}
