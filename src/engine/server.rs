//! The server: listens on one port (TCP control, UDP audio), authenticates clients, bans
//! repeat offenders, and streams one capture to up to `max_clients` of them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::{wait_until, Conn, ConnError, HeartbeatClock};
use super::media::{self, MediaCommand, NOT_ENDED};
use super::{
    ring, sock, Command, EngineError, Event, Inbox, Outcome, ServerConfig, Stats,
    HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, MAX_PENDING_HANDSHAKES, MAX_PENDING_PER_IP,
    PEER_TIMEOUT,
};
use crate::audio::wake::Wake;
use crate::audio::{self, DeviceSpec, StreamFormat};
use crate::protocol::frame::{
    Anchor, Codec, Direction, Goodbye, GoodbyeReason, Message, SessionParams, MAX_AUDIO_BYTES,
};
use crate::protocol::handshake::{HandshakeError, ServerHandshake};
use crate::protocol::ident::{check_client_line, Ident, Status, MAX_IDENT_LEN};
use crate::protocol::keys::ControlCipher;
use crate::store::bans::{canonical, BanList, FailureCounter};

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
    bans: Mutex<(BanList, FailureCounter)>,
    /// Authenticated sessions.
    active: AtomicUsize,
    /// Connections not yet finished (handshaking or streaming).
    live: AtomicUsize,
    pending: PendingSlots,
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

    fn bans(&self) -> MutexGuard<'_, (BanList, FailureCounter)> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failed attempt from `ip`, banning it at the threshold.
    fn fail(&self, ip: IpAddr) {
        let mut guard = self.bans();
        let (list, counter) = &mut *guard;
        let (count, ban) = counter.fail(ip);
        let _ = self.events.send(Event::AuthFailed {
            ip,
            count,
            threshold: self.cfg.ban_threshold,
        });
        if ban {
            counter.forget(ip);
            match list.add(ip) {
                Ok(_) => tracing::warn!("banned {ip} (listed in {})", list.path().display()),
                Err(e) => tracing::error!("could not save the ban of {ip}: {e}"),
            }
            let _ = self.events.send(Event::Banned(ip));
        }
    }
}

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
    let shared = Arc::new(Shared {
        ident: Ident::ours(cfg.protocol_major).claiming_minor(cfg.protocol_minor),
        format,
        frame_frames: frames,
        bans: Mutex::new((bans, FailureCounter::new(cfg.ban_threshold))),
        active: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        pending: PendingSlots::default(),
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        // Bound the handshakes in flight, in all and per address: a flood of idle connections
        // costs a socket each, briefly, and one address cannot lock everyone else out.
        let ip = canonical(peer.ip());
        if !shared.pending.try_acquire(ip) {
            tracing::debug!("too many handshakes in progress; dropped {peer}");
            continue;
        }
        shared.live.fetch_add(1, Ordering::AcqRel);
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("control {peer}"))
            .spawn(move || {
                serve(&s, stream, peer);
                s.live.fetch_sub(1, Ordering::AcqRel);
                // The engine ends a finished stream once the last connection is gone.
                s.ring_engine();
            });
        if spawned.is_err() {
            shared.pending.release(ip);
            shared.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Handshakes in progress, in all and per address.
#[derive(Debug, Default)]
pub(crate) struct PendingSlots {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl PendingSlots {
    fn try_acquire(&self, ip: IpAddr) -> bool {
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        let mine = map.get(&ip).copied().unwrap_or(0);
        if total >= MAX_PENDING_HANDSHAKES || mine >= MAX_PENDING_PER_IP {
            return false;
        }
        map.insert(ip, mine + 1);
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// Releases a pending-handshake slot when the handshake phase ends, however it ends.
struct Pending<'a>(&'a PendingSlots, IpAddr, bool);

impl Pending<'_> {
    fn done(&mut self) {
        if !self.2 {
            self.2 = true;
            self.0.release(self.1);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    let ip = canonical(peer.ip());
    // Held through a refusal's linger too (Conn::refuse), so a refused address keeps at
    // most MAX_PENDING_PER_IP threads busy.
    let mut pending = Pending(&shared.pending, ip, false);
    let mut conn = Conn::new(stream);
    let banned = {
        let mut guard = shared.bans();
        if let Err(e) = guard.0.refresh() {
            tracing::warn!("ban list: {e}");
        }
        guard.0.contains(ip)
    };
    if banned {
        tracing::info!("refused banned {ip}");
        conn.refuse(&Status::Forbidden.to_line());
        return;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let line = match conn.read_line(MAX_IDENT_LEN, deadline) {
        Ok(l) => l,
        Err(ConnError::LineTooLong) => {
            shared.fail(ip);
            conn.refuse(&Status::BadRequest.to_line());
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
    };
    shared.bans().1.forget(ip);
    pending.done();

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
        other => HandshakeFailure::Gone(other.to_string()),
    };
    let mut hs = ServerHandshake::new(&shared.cfg.password, client_line, our_line);
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
