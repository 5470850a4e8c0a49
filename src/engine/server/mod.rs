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

mod control;
mod media;

use super::guard::{Guard, Limits, Refusal};
use super::Codec;
use super::{
    ring, sock, CaptureConfig, Command, Common, EngineError, Event, Inbox, ListenConfig, Outcome,
    Stats, HEARTBEAT_INTERVAL,
};
use crate::audio::wake::Wake;
use crate::audio::{self, DeviceSpec, StreamFormat};
use crate::protocol::frame::MAX_AUDIO_BYTES;
use crate::protocol::ident::{Ident, Status};
use crate::store::atomic::write_atomic;
use crate::store::bans::{canonical, BanList};
use media::{MediaCommand, NOT_ENDED};

/// Media counters, written by the media thread, read for the status line.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The capture device's own delay, once reported.
    pub(crate) device_delay: crate::audio::DelayCell,
    /// Whether the capture device works.
    pub(crate) device: Arc<super::DeviceCell>,
}

/// State every server thread shares.
pub(crate) struct Shared {
    /// How it listens and whom it lets in.
    listen: ListenConfig,
    /// What it captures and how it codes it.
    capture: CaptureConfig,
    /// The shared password.
    password: crate::protocol::Password,
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
            threshold: self.listen.ban_threshold,
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

/// Frames per Opus packet: 2.5 ms for `frame_ms` 2 or 3, else `frame_ms` (5, 10 or 20; the
/// profile's validation allows no other).
fn opus_frames(format: StreamFormat, frame_ms: u32) -> Result<u16, EngineError> {
    let tenths_ms = if frame_ms <= 3 { 25 } else { frame_ms * 10 };
    let frames = format.sample_rate * tenths_ms / 10_000;
    if !crate::protocol::frame::opus_frame_ok(format.sample_rate, frames) {
        return Err(EngineError::Media(format!(
            "opus codes 8, 12, 16, 24 or 48 kHz in frames of 2.5, 5, 10 or 20 ms; the source gives {} Hz (frame_ms {frame_ms}): use codec pcm or set [audio] sample_rate = 48000",
            format.sample_rate
        )));
    }
    u16::try_from(frames).map_err(|_| EngineError::Media("frame too long".into()))
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
    listen: ListenConfig,
    capture: CaptureConfig,
    common: Common,
    inbox: &Inbox,
    events: &Sender<Event>,
) -> Result<Outcome, EngineError> {
    let cap = &capture;
    let want = (cap.sample_rate.is_some() || cap.channels.is_some()).then(|| StreamFormat {
        sample_rate: cap.sample_rate.unwrap_or(48_000),
        channels: cap.channels.unwrap_or(2),
    });
    let period = audio::device_period(Duration::from_millis(u64::from(cap.frame_ms)));
    let (spec, host, kind) = (cap.device.clone(), cap.host, cap.device_kind);
    let open = move |want| audio::open_source(host, &spec, kind, want, period);
    let source = open(want)?;
    // A device is let go while nobody listens and opened again (in the format announced) for
    // the next listener; a file's position is the stream's, so it runs on.
    let reopen: Option<media::Reopen> = match cap.device {
        DeviceSpec::Wav(_) => None,
        _ => Some(Box::new(move |format| open(Some(format)))),
    };
    let format = source.format();
    let frames = match cap.codec {
        Codec::Opus { .. } => opus_frames(format, cap.frame_ms)?,
        Codec::Pcm => frame_frames(format, cap.frame_ms, false),
        Codec::PcmRedundant => frame_frames(format, cap.frame_ms, true),
    };
    let (listener, udp) = sock::bind_pair(listen.bind, listen.port, common.socket_buffer_size)
        .map_err(|e| {
            let where_ = listen.bind.map_or_else(
                || format!("port {}", listen.port),
                |ip| format!("{}", SocketAddr::new(ip, listen.port)),
            );
            // The words of the one cause users meet, the same on every platform (Wine's
            // WinSock, for one, has no text for it).
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                ": another program (or another EchoWarp) has it"
            } else {
                ""
            };
            EngineError::io(format!("cannot listen on {where_}{why}"))(e)
        })?;
    let local = listener
        .local_addr()
        .map_err(EngineError::io("the listening address"))?;
    let bans = BanList::load(&listen.ban_list)?;
    let (media_tx, media_rx) = crossbeam_channel::unbounded();
    let (ban_tx, ban_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        ident: Ident::ours(common.claim.major).claiming_minor(common.claim.minor),
        format,
        frame_frames: frames,
        bans: Mutex::new(bans),
        ban_writes: ban_tx,
        guard: Arc::new(Guard::new(
            Limits::new(listen.ban_threshold),
            Instant::now(),
        )),
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
        listen,
        capture,
        password: common.password,
    });
    tracing::info!(
        "server on {local}: {} Hz, {} ch, {} frames per packet, {} ({})",
        format.sample_rate,
        format.channels,
        frames,
        shared.listen.mode.name(),
        source.describe()
    );
    if shared.password.is_empty() {
        let anyone = shared.listen.allow_anonymous;
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
    // Held until the server ends: dropping it says goodbye to the network's browsers.
    let _announced = shared
        .listen
        .discovery
        .then(|| {
            let version = shared.ident.version();
            match super::discovery::Announcement::start(
                local.port(),
                &version,
                "send",
                !shared.password.is_empty(),
            ) {
                Ok(a) => {
                    tracing::info!("announced on the local network as \"{}\"", a.name());
                    Some(a)
                }
                Err(e) => {
                    tracing::info!("not announced on the local network (mDNS): {e}");
                    None
                }
            }
        })
        .flatten();

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
        .map_err(EngineError::io("cannot start the media thread"))?;
    let writer_shared = shared.clone();
    let ban_writer = thread::Builder::new()
        .name("ban list".into())
        .spawn(move || write_bans(&writer_shared, &ban_rx))
        .map_err(EngineError::io("cannot start the ban list's thread"))?;
    let accept_shared = shared.clone();
    let acceptor = thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, accept_shared))
        .map_err(EngineError::io("cannot start the accept thread"))?;

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
            outcome = Err(EngineError::Media("the capture stopped".into()));
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
                    shared.capture.codec.wire().name(),
                    shared.listen.mode.name()
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
                device: shared.counters.device.get(),
                muted: shared.capture.mute.is_on(),
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
        Err(_) => outcome = Err(EngineError::Media("the media thread panicked".into())),
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
    let path = shared.listen.ban_list.clone();
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
                control::serve(&s, stream, peer, slot);
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
