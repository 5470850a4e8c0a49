//! The server: listens on one port (TCP control, UDP audio), authenticates clients, bans
//! repeat offenders, and streams one capture to up to `max_clients` of them.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::{wait_until, Conn, ConnError, HeartbeatClock};
use super::guard::{is_local_network, Guard, Limits, Refusal, Slot};
use super::media::{self, MediaCommand, NOT_ENDED};
use super::{
    ring, sock, Command, EngineError, Event, Inbox, Outcome, ServerConfig, Stats,
    HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, PEER_TIMEOUT,
};
use crate::audio::wake::Wake;
use crate::audio::{self, DeviceSpec, StreamFormat};
use crate::protocol::frame::{
    Anchor, Codec, Direction, Goodbye, GoodbyeReason, Message, SessionParams, MAX_AUDIO_BYTES,
};
use crate::protocol::handshake::{HandshakeError, ServerHandshake};
use crate::protocol::ident::{check_client_line, Ident, Status, MAX_IDENT_LEN};
use crate::protocol::keys::ControlCipher;
use crate::store::atomic::write_atomic;
use crate::store::bans::{canonical, BanList};

/// Media counters, written by the media thread, read for the status line.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The capture device's own delay, once reported.
    pub(crate) device_delay: crate::audio::DelayCell,
}

/// State every server thread shares.
pub(crate) struct Shared {
    pub(crate) cfg: ServerConfig,
    ident: Ident,
    format: StreamFormat,
    frame_frames: u16,
    bans: Mutex<BanList>,
    /// Rung when the ban list has a change for the writer thread.
    ban_writes: Sender<()>,
    /// Pre-auth slots, penalties, failure budgets (DESIGN.md §3.4).
    guard: Arc<Guard>,
    /// Authenticated sessions.
    active: AtomicUsize,
    /// Connections not yet finished (handshaking or streaming).
    live: AtomicUsize,
    pub(crate) stop: AtomicBool,
    pub(crate) end_position: AtomicU64,
    pub(crate) counters: Counters,
    media: Sender<MediaCommand>,
    events: Sender<Event>,
    /// The engine thread's wake-up: rung when a connection or the media thread ends.
    engine_bell: Option<Arc<Wake>>,
    /// Set once the media thread has ended, whatever the reason.
    pub(crate) media_ended: AtomicBool,
    /// Each session's wake-up, by session id: its control thread sleeps until the next
    /// heartbeat unless the media thread (the client's UDP is proven, the stream ended) or the
    /// engine (a stop) has news for it.
    bells: Mutex<HashMap<u32, Arc<Wake>>>,
    /// The stream position of the newest frame sent and when the sound it carries entered the
    /// capture (a device's input, less the encoder's look-ahead): the heartbeats' anchor, from
    /// which each client measures the end-to-end latency.
    /// Lock-free: the media thread writes it with every packet.
    anchor: crate::audio::stamp::StampCell,
}

impl Shared {
    /// Records where the stream was when (the media thread, for every frame it sends).
    pub(crate) fn set_anchor(&self, position: u64, captured: Instant) {
        self.anchor.record(position, captured);
    }

    fn session_bells(&self) -> MutexGuard<'_, HashMap<u32, Arc<Wake>>> {
        self.bells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes session `id`'s control thread.
    pub(crate) fn ring_session(&self, id: u32) {
        ring(self.session_bells().get(&id).map(|b| &**b));
    }

    /// Wakes every session's control thread.
    pub(crate) fn ring_sessions(&self) {
        for b in self.session_bells().values() {
            b.notify();
        }
    }

    /// Wakes the engine thread.
    pub(crate) fn ring_engine(&self) {
        ring(self.engine_bell.as_deref());
    }

    fn bans(&self) -> MutexGuard<'_, BanList> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failed attempt from `ip`, banning it (or its prefix) when the guard says so.
    /// The ban list is written by its own thread, off this connection's path.
    fn fail(&self, ip: IpAddr) {
        let verdict = self.guard.failed(ip, Instant::now());
        let _ = self.events.send(Event::AuthFailed {
            ip,
            count: verdict.count,
            threshold: self.cfg.ban_threshold,
        });
        let (addr, net) = {
            let mut list = self.bans();
            let addr = verdict.ban_addr && list.ban_deferred(ipnet::IpNet::from(ip));
            let net = verdict.ban_prefix.filter(|n| list.ban_deferred(*n));
            (addr, net)
        };
        if addr {
            tracing::warn!("banned {ip}");
            let _ = self.events.send(Event::Banned(ip));
        }
        if let Some(net) = net {
            tracing::warn!("banned {net}: failed logins from several of its addresses");
            let _ = self.events.send(Event::BannedNetwork(net));
        }
        if addr || net.is_some() {
            let _ = self.ban_writes.send(());
        }
    }
}

/// Time for the handshake after a slow-lane turn.
const TURN_GRACE: Duration = Duration::from_secs(2);

/// Frames per Opus packet: 2.5 ms for `frame_ms` 2 or 3, else `frame_ms` (5, 10 or 20; the
/// profile's validation allows no other).
fn opus_frames(format: StreamFormat, frame_ms: u32) -> Result<u16, EngineError> {
    let tenths_ms = if frame_ms <= 3 { 25 } else { frame_ms * 10 };
    let frames = format.sample_rate * tenths_ms / 10_000;
    if !crate::protocol::frame::opus_frame_ok(format.sample_rate, frames) {
        return Err(EngineError::Audio(format!(
            "opus codes 8, 12, 16, 24 or 48 kHz in frames of 2.5, 5, 10 or 20 ms; the source gives {} Hz (frame_ms {frame_ms}): use codec pcm or set [audio] sample_rate = 48000",
            format.sample_rate
        )));
    }
    u16::try_from(frames).map_err(|_| EngineError::Audio("frame too long".into()))
}

/// Frames per datagram: `frame_ms` of audio, capped so a datagram fits the MTU (with
/// redundancy, two frames must fit: 3.2 ms of 48 kHz stereo at most).
fn frame_frames(format: StreamFormat, frame_ms: u32, redundancy: bool) -> u16 {
    let wanted = (format.sample_rate as usize * frame_ms as usize / 1000).max(1);
    let copies = if redundancy { 2 } else { 1 };
    let cap = MAX_AUDIO_BYTES / (2 * copies * usize::from(format.channels));
    wanted.min(cap).min(usize::from(u16::MAX)) as u16
}

pub(crate) fn run(
    cfg: ServerConfig,
    inbox: &Inbox,
    events: &Sender<Event>,
) -> Result<Outcome, EngineError> {
    let want = (cfg.sample_rate.is_some() || cfg.channels.is_some()).then(|| StreamFormat {
        sample_rate: cfg.sample_rate.unwrap_or(48_000),
        channels: cfg.channels.unwrap_or(2),
    });
    let period = audio::device_period(Duration::from_millis(u64::from(cfg.frame_ms)));
    let (spec, kind) = (cfg.device.clone(), cfg.device_kind);
    let open = move |want| audio::open_source(&spec, kind, want, period);
    let source = open(want)?;
    // A device is let go while nobody listens and opened again (in the format announced) for
    // the next listener; a file's position is the stream's, so it runs on.
    let reopen: Option<media::Reopen> = match cfg.device {
        DeviceSpec::Wav(_) => None,
        _ => Some(Box::new(move |format| open(Some(format)))),
    };
    let format = source.format();
    let frames = if cfg.opus_kbps.is_some() {
        opus_frames(format, cfg.frame_ms)?
    } else {
        frame_frames(format, cfg.frame_ms, cfg.redundancy)
    };
    let (listener, udp) =
        sock::bind_pair(cfg.bind, cfg.port, cfg.socket_buffer_size).map_err(|e| {
            let where_ = cfg.bind.map_or_else(
                || format!("port {}", cfg.port),
                |ip| format!("{}", SocketAddr::new(ip, cfg.port)),
            );
            EngineError::Io(format!("cannot listen on {where_}: {e}"))
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| EngineError::Io(e.to_string()))?;
    let bans = BanList::load(&cfg.ban_list)?;
    let (media_tx, media_rx) = crossbeam_channel::unbounded();
    let (ban_tx, ban_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        ident: Ident::ours(cfg.protocol_major).claiming_minor(cfg.protocol_minor),
        format,
        frame_frames: frames,
        bans: Mutex::new(bans),
        ban_writes: ban_tx,
        guard: Arc::new(Guard::new(Limits::new(cfg.ban_threshold), Instant::now())),
        active: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        end_position: AtomicU64::new(NOT_ENDED),
        counters: Counters::default(),
        media: media_tx,
        events: events.clone(),
        engine_bell: inbox.bell.clone(),
        media_ended: AtomicBool::new(false),
        anchor: crate::audio::stamp::StampCell::default(),
        bells: Mutex::new(HashMap::new()),
        cfg,
    });
    tracing::info!(
        "server on {local}: {} Hz, {} ch, {} frames per packet, {} ({})",
        format.sample_rate,
        format.channels,
        frames,
        shared.cfg.mode.name(),
        source.describe()
    );
    if shared.cfg.password.is_empty() {
        let anyone = shared.cfg.allow_anonymous;
        if anyone {
            tracing::warn!(
                "no password: anyone who can reach port {} can listen, from any address (--allow-anonymous)",
                local.port()
            );
        } else {
            tracing::warn!(
                "no password: anyone on a local network (loopback, private, link-local, CGNAT, unique-local addresses) can listen; clients from other addresses are refused. Set one with -p (the same on both sides)"
            );
        }
        let _ = events.send(Event::NoPassword { anyone });
    }
    let _ = events.send(Event::Listening(local));

    let media_shared = shared.clone();
    let media = thread::Builder::new()
        .name("media".into())
        .spawn(move || {
            media::run(
                udp,
                (source, reopen),
                usize::from(frames),
                media_rx,
                media_shared,
            )
        })
        .map_err(|e| EngineError::Io(e.to_string()))?;
    let writer_shared = shared.clone();
    let ban_writer = thread::Builder::new()
        .name("ban list".into())
        .spawn(move || write_bans(&writer_shared, &ban_rx))
        .map_err(|e| EngineError::Io(e.to_string()))?;
    let accept_shared = shared.clone();
    let acceptor = thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, accept_shared))
        .map_err(|e| EngineError::Io(e.to_string()))?;

    let mut outcome = Ok(Outcome::Stopped);
    let mut next_stats = Instant::now() + HEARTBEAT_INTERVAL;
    let mut last_bytes = (0u64, Instant::now());
    loop {
        // Asleep until the next status line, unless a command comes or another thread rings:
        // a connection or the media thread ended.
        if let Some(Command::Stop) = inbox.next(next_stats) {
            break;
        }
        if shared.media_ended.load(Ordering::Acquire) || media.is_finished() {
            outcome = Err(EngineError::Audio("the capture stopped".into()));
            break;
        }
        if shared.end_position.load(Ordering::Acquire) != NOT_ENDED
            && shared.live.load(Ordering::Acquire) == 0
        {
            outcome = Ok(Outcome::StreamEnded);
            break;
        }
        if Instant::now() >= next_stats {
            next_stats += HEARTBEAT_INTERVAL;
            let bytes = shared.counters.bytes.load(Ordering::Relaxed);
            let secs = last_bytes.1.elapsed().as_secs_f64().max(1e-3);
            let kbps = bytes.saturating_sub(last_bytes.0) as f64 * 8.0 / 1e3 / secs;
            last_bytes = (bytes, Instant::now());
            let _ = events.send(Event::Stats(Stats {
                peer: local.to_string(),
                format: format!(
                    "{} Hz {} ch {} {}",
                    format.sample_rate,
                    format.channels,
                    shared.cfg.codec_name(),
                    shared.cfg.mode.name()
                ),
                packets: shared.counters.sent.load(Ordering::Relaxed),
                dropped: shared.counters.dropped.load(Ordering::Relaxed),
                clients: shared.active.load(Ordering::Relaxed),
                kbps,
                device_ms: shared
                    .counters
                    .device_delay
                    .get()
                    .map(|d| d.as_secs_f64() * 1e3),
                ..Stats::default()
            }));
        }
    }

    // Shut down: say goodbye to clients, stop accepting, stop the media thread.
    shared.stop.store(true, Ordering::Release);
    shared.ring_sessions();
    let wake = if local.ip().is_unspecified() {
        SocketAddr::new(
            if local.is_ipv6() {
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
            } else {
                IpAddr::from([127, 0, 0, 1])
            },
            local.port(),
        )
    } else {
        local
    };
    let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
    // The media thread, with no capture running, waits for a datagram: send it one.
    let unspecified = if wake.is_ipv6() {
        IpAddr::from([0u16; 8])
    } else {
        IpAddr::from([0u8; 4])
    };
    if let Ok(s) = UdpSocket::bind(SocketAddr::new(unspecified, 0)) {
        let _ = s.send_to(&[], wake);
    }
    let _ = acceptor.join();
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.live.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let _ = shared.ban_writes.send(());
    let _ = ban_writer.join();
    // A ban made after the writer's last look.
    flush_bans(&shared);
    tracing::info!(
        "sent {} datagrams, {} bytes in all; dropped {} hostile or stray",
        shared.counters.sent.load(Ordering::Relaxed),
        shared.counters.bytes.load(Ordering::Relaxed),
        shared.counters.dropped.load(Ordering::Relaxed)
    );
    match media.join() {
        // The media thread's own error says more than "the capture stopped".
        Ok(Err(e)) => outcome = Err(e),
        Err(_) => outcome = Err(EngineError::Audio("the media thread panicked".into())),
        _ => {}
    }
    outcome
}

/// Writes the ban list whenever it has a change, until the server stops: bans are decided on
/// connection threads, under a lock every new connection takes, and must not wait for a disk.
fn write_bans(shared: &Shared, rings: &crossbeam_channel::Receiver<()>) {
    while !shared.stop.load(Ordering::Acquire) {
        if rings.recv_timeout(Duration::from_secs(1)).is_ok() {
            // Many bans at once make one write.
            while rings.try_recv().is_ok() {}
            flush_bans(shared);
        }
    }
}

/// Writes the ban list if it has a change not yet on disk.
fn flush_bans(shared: &Shared) {
    let Some((generation, text)) = shared.bans().pending_write() else {
        return;
    };
    let path = shared.cfg.ban_list.clone();
    match write_atomic(&path, text.as_bytes(), false) {
        Ok(()) => shared.bans().wrote(generation),
        Err(e) => tracing::error!("could not save the ban list: {e}"),
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        // Pre-auth slots are bounded in all, per address and per prefix; a prefix whose
        // handshakes keep timing out is refused for a while (src/engine/guard.rs).
        let ip = canonical(peer.ip());
        let slot = match shared.guard.admit(ip, Instant::now()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!("{peer} not admitted: {why}");
                turn_away(stream, why);
                continue;
            }
        };
        shared.live.fetch_add(1, Ordering::AcqRel);
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("control {peer}"))
            .spawn(move || {
                serve(&s, stream, peer, slot);
                s.live.fetch_sub(1, Ordering::AcqRel);
                // The engine ends a finished stream once the last connection is gone.
                s.ring_engine();
            });
        if spawned.is_err() {
            shared.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Closes a connection that was not admitted, from the accept loop itself (no thread, no
/// wait): a busy server says 503 where the socket takes the line at once; a penalised prefix
/// hears nothing.
fn turn_away(stream: TcpStream, why: Refusal) {
    if why != Refusal::Penalised && stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(Status::ServiceUnavailable.to_line().as_bytes());
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

fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr, mut slot: Slot) {
    let ip = canonical(peer.ip());
    // The slot is held through a refusal's linger too (Conn::refuse), so a refused address
    // keeps at most `per_addr` threads busy.
    let mut conn = Conn::new(stream);
    let banned = {
        let mut list = shared.bans();
        if let Err(e) = list.refresh() {
            tracing::warn!("ban list: {e}");
        }
        list.contains(ip)
    };
    if banned {
        tracing::info!("refused banned {ip}");
        conn.refuse(&Status::Forbidden.to_line());
        return;
    }
    if shared.cfg.password.is_empty() && !shared.cfg.allow_anonymous && !is_local_network(ip) {
        tracing::warn!(
            "{peer}: refused: without a password, clients are served from local networks only (set a password, or --allow-anonymous)"
        );
        conn.refuse(&Status::PasswordRequired.to_line());
        return;
    }
    let accepted = Instant::now();
    let mut deadline = accepted + HANDSHAKE_TIMEOUT;
    let first_bytes = accepted + shared.guard.limits().first_bytes;
    let line = match conn.read_line_within(MAX_IDENT_LEN, first_bytes, deadline) {
        Ok(l) => l,
        Err(ConnError::LineTooLong) => {
            shared.fail(ip);
            conn.refuse(&Status::BadRequest.to_line());
            return;
        }
        Err(ConnError::TimedOut) => {
            tracing::debug!("{peer}: no identification in time");
            shared.guard.timed_out(ip, Instant::now());
            return;
        }
        Err(e) => {
            tracing::debug!("{peer}: no identification: {e}");
            return;
        }
    };
    let full = shared.active.load(Ordering::Acquire) >= shared.cfg.max_clients;
    if let Err(status) = check_client_line(&line, &shared.ident, full) {
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
        conn.refuse(&status.to_line());
        return;
    }
    // Once failures pile up, a handshake waits for its turn before anything is answered.
    match shared.guard.turn(ip, Instant::now()) {
        Ok(None) => {}
        Ok(Some(at)) => {
            tracing::debug!("{peer}: slow lane, {:?}", at - Instant::now());
            if !wait_turn(shared, at) {
                return;
            }
            deadline = deadline.max(at + TURN_GRACE);
        }
        Err(()) => {
            tracing::info!("{peer}: refused for now: too many failed logins of late");
            conn.refuse(&Status::ServiceUnavailable.to_line());
            return;
        }
    }
    let our_line = shared.ident.to_line();
    if conn.write_all(our_line.as_bytes()).is_err() {
        return;
    }
    let client_line = String::from_utf8_lossy(&line).into_owned();
    // What the client's protocol minor knows of (check_client_line has parsed it already).
    let minor = Ident::parse(&line).map_or(0, |i| i.minor);
    let keys = match handshake(shared, &mut conn, &client_line, &our_line, deadline) {
        Ok(k) => k,
        Err(HandshakeFailure::Password) => {
            let _ = conn.send(&Message::AuthFailed);
            tracing::warn!("{peer}: wrong password");
            shared.fail(ip);
            return;
        }
        Err(HandshakeFailure::Malformed(why)) => {
            tracing::info!("{peer}: handshake failed: {why}");
            shared.fail(ip);
            return;
        }
        Err(HandshakeFailure::Gone(why)) => {
            tracing::debug!("{peer}: left during the handshake: {why}");
            return;
        }
        Err(HandshakeFailure::TimedOut) => {
            tracing::debug!("{peer}: handshake timed out");
            shared.guard.timed_out(ip, Instant::now());
            return;
        }
    };
    shared.guard.succeeded(ip, Instant::now());
    slot.release();

    if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.cfg.max_clients {
        shared.active.fetch_sub(1, Ordering::AcqRel);
        tracing::info!("{peer}: server became full during the handshake");
        return;
    }
    conn.secure(
        ControlCipher::new(&keys.server_to_client.control),
        ControlCipher::new(&keys.client_to_server.control),
    );
    let reason = session(shared, &mut conn, (peer, ip), keys, minor);
    shared.active.fetch_sub(1, Ordering::AcqRel);
    tracing::info!("{peer} left: {reason}");
    let _ = shared.events.send(Event::ClientLeft { peer, reason });
}

enum HandshakeFailure {
    Password,
    Malformed(String),
    Gone(String),
    TimedOut,
}

fn handshake(
    shared: &Shared,
    conn: &mut Conn,
    client_line: &str,
    our_line: &str,
    deadline: Instant,
) -> Result<crate::protocol::keys::SessionKeys, HandshakeFailure> {
    let gone = |e: ConnError| match e {
        ConnError::Wire(w) => HandshakeFailure::Malformed(w.to_string()),
        ConnError::TimedOut => HandshakeFailure::TimedOut,
        other => HandshakeFailure::Gone(other.to_string()),
    };
    let mut hs = ServerHandshake::new(shared.cfg.password.expose(), client_line, our_line);
    let Message::Pake(m) = conn.expect(deadline).map_err(gone)? else {
        return Err(HandshakeFailure::Malformed(
            "expected the PAKE message".into(),
        ));
    };
    let ours = hs
        .handle_client_pake(&m)
        .map_err(|e| HandshakeFailure::Malformed(e.to_string()))?;
    conn.send(&Message::Pake(ours)).map_err(gone)?;
    let Message::Confirm(tag) = conn.expect(deadline).map_err(gone)? else {
        return Err(HandshakeFailure::Malformed(
            "expected key confirmation".into(),
        ));
    };
    match hs.handle_client_confirm(&tag) {
        Ok((server_tag, keys)) => {
            conn.send(&Message::Confirm(server_tag)).map_err(gone)?;
            Ok(keys)
        }
        Err(HandshakeError::AuthFailed) => Err(HandshakeFailure::Password),
        Err(e) => Err(HandshakeFailure::Malformed(e.to_string())),
    }
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
    conn: &mut Conn,
    peer: (SocketAddr, IpAddr),
    keys: crate::protocol::keys::SessionKeys,
    minor: u16,
) -> String {
    let params = SessionParams {
        direction: Direction::ServerToClient,
        codec: if shared.cfg.opus_kbps.is_some() {
            Codec::Opus
        } else if shared.cfg.redundancy {
            Codec::PcmS16Redundant
        } else {
            Codec::PcmS16
        },
        mode: shared.cfg.mode,
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
    let reason = run_session(shared, conn, peer, keys, params, bell.as_deref(), minor);
    shared.session_bells().remove(&params.session_id);
    let _ = shared.media.send(MediaCommand::Remove {
        session_id: params.session_id,
    });
    reason
}

/// [`session`]'s loop: it wakes for a heartbeat, a message from the client, or `bell`. A client
/// of protocol minor 1 or later (`minor`) gets the capture anchor in every heartbeat.
fn run_session(
    shared: &Shared,
    conn: &mut Conn,
    (peer, ip): (SocketAddr, IpAddr),
    keys: crate::protocol::keys::SessionKeys,
    params: SessionParams,
    bell: Option<&Wake>,
    minor: u16,
) -> String {
    // Register with the media thread before announcing: the client's hello may follow at once.
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let _ = shared.media.send(MediaCommand::Add {
        params,
        ip,
        keys: Box::new(keys),
        ready: ready_tx,
    });
    if let Err(e) = conn.send(&Message::Params(params)) {
        return format!("could not send session parameters: {e}");
    }
    tracing::info!("{peer} joined (session {:08x})", params.session_id);
    let _ = shared.events.send(Event::ClientJoined(peer));

    let mut last_heard = Instant::now();
    let mut heartbeat = HeartbeatClock::new(Instant::now());
    let mut eos_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if shared.stop.load(Ordering::Acquire) {
            let _ = conn.send(&Message::Goodbye(Goodbye {
                reason: GoodbyeReason::Shutdown,
                end_position: 0,
            }));
            break "server stopping".to_owned();
        }
        let end = shared.end_position.load(Ordering::Acquire);
        if end != NOT_ENDED && eos_deadline.is_none() {
            let _ = conn.send(&Message::Goodbye(Goodbye {
                reason: GoodbyeReason::EndOfStream,
                end_position: end,
            }));
            // The client plays out what it holds, then closes; do not wait for ever.
            eos_deadline = Some(now + Duration::from_secs(10));
        }
        if eos_deadline.is_some_and(|d| now >= d) {
            break "end of stream".to_owned();
        }
        if ready_rx.try_recv().is_ok() {
            if let Err(e) = conn.send(&Message::UdpReady) {
                break format!("control channel: {e}");
            }
        }
        if let Some(mut hb) = heartbeat.poll(now, 0, 0) {
            if minor >= 1 && shared.ident.minor >= 1 {
                hb.anchor = shared.anchor.read().map(|(position, at)| Anchor {
                    position,
                    time_us: heartbeat.clock_us(at),
                });
            }
            if let Err(e) = conn.send(&Message::Heartbeat(hb)) {
                break format!("control channel: {e}");
            }
        }
        let due = eos_deadline.map_or(heartbeat.next_at(), |d| d.min(heartbeat.next_at()));
        match conn.recv_until(wait_until(now, due, bell), bell) {
            Ok(Some(msg)) => {
                last_heard = Instant::now();
                match msg {
                    Message::Goodbye(_) => break "said goodbye".to_owned(),
                    Message::Heartbeat(h) => {
                        tracing::trace!("{peer}: heartbeat {h:?}");
                        heartbeat.on_peer(&h, Instant::now());
                    }
                    other => tracing::debug!("{peer}: unexpected {other:?}"),
                }
            }
            Ok(None) => {}
            Err(ConnError::Closed) if eos_deadline.is_some() => break "end of stream".to_owned(),
            Err(ConnError::Closed) => break "connection closed".to_owned(),
            Err(e) => break format!("control channel: {e}"),
        }
        if last_heard.elapsed() > PEER_TIMEOUT {
            break format!("silent for {} s", PEER_TIMEOUT.as_secs());
        }
    }
}
