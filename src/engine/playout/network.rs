//! The network side of a session's playout: the thread that takes UDP in, authenticates it and
//! hands it to the playout core, which a device's callback pulls ([`PulledPlayout`]) or, for a
//! file, the null sink or a device whose stream will not run, a [`Pump`] on the stream's clock.

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PlayStats;
use crate::audio::playout::{PlayoutCore, NO_END};
use crate::audio::stamp::shift;
use crate::audio::{Sink, StreamFormat};
use crate::engine::EngineError;
use crate::protocol::datagram::{split_position, Kind, Opener, MAX_DATAGRAM};
use crate::protocol::frame::SessionParams;

/// How often a file's pump looks for what waited, between arrivals.
const FILE_TICK: Duration = Duration::from_millis(20);
/// After an end of stream that came before any audio, how long to wait for some.
const END_GRACE: Duration = Duration::from_millis(300);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A datagram's audio on its way from the network thread to the device callback, stamped with
/// its arrival (the latency tuner measures the network, not the callback's schedule).
struct Arrival {
    at: Instant,
    position: u64,
    len: usize,
    bytes: [u8; MAX_DATAGRAM],
}

/// Arrivals in flight to the callback at once: as many as the jitter buffer holds.
const ARRIVALS: usize = crate::audio::jitter::CAPACITY;

/// The playout as a device callback runs it ([`crate::audio::Pull`]): it takes what the
/// network thread received, then plays from the jitter buffer.
struct PulledPlayout {
    core: PlayoutCore,
    arrivals: rtrb::Consumer<Arrival>,
    stats: Arc<PlayStats>,
    end: Arc<AtomicU64>,
    /// Set once the announced end has been played.
    reached: Arc<AtomicBool>,
    /// Set if converting the audio failed (the callback then plays silence).
    failed: Arc<AtomicBool>,
    /// Frames of the stream in the last `out` (the pump writes only those to a file).
    frames: usize,
    /// The sink's format.
    out: StreamFormat,
    /// The sink plays in real time (a device).
    clocked: bool,
}

impl crate::audio::Pull for PulledPlayout {
    fn pull(&mut self, out: &mut [f32], now: Instant) {
        while let Ok(a) = self.arrivals.pop() {
            let body = &a.bytes[..a.len.min(MAX_DATAGRAM)];
            if !self.core.on_audio(a.position, body, a.at) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.frames = 0;
        match self.core.pull(now, self.end.load(Ordering::Acquire), out) {
            Ok(pulled) => {
                self.frames = pulled.frames;
                if pulled.ended {
                    self.reached.store(true, Ordering::Release);
                }
            }
            Err(_) => {
                out.fill(0.0);
                self.failed.store(true, Ordering::Release);
            }
        }
        // What is staged plays after this callback's `out`, which plays after the device's
        // own delay.
        if let Some(position) = self.core.next_out_position(self.core.staged_frames()) {
            // A file or the null sink takes what it is given at once.
            let ahead = if self.clocked {
                (out.len() / usize::from(self.out.channels.max(1))) as i64
            } else {
                0
            };
            let start = now.checked_add(self.stats.device_delay.get().unwrap_or_default());
            if let Some(at) = start.and_then(|t| shift(t, ahead, self.out.sample_rate)) {
                self.stats.played.record(position, at);
            }
        }
        publish(&self.core, &self.stats);
    }

    fn frames(&self) -> usize {
        self.frames
    }
}

/// The live figures and counters, for the control loop (relaxed atomic stores: fit for the
/// audio thread).
fn publish(core: &PlayoutCore, stats: &PlayStats) {
    let s = core.stats();
    let f = core.figures();
    stats.received.store(s.received, Ordering::Relaxed);
    stats.lost.store(s.lost, Ordering::Relaxed);
    stats.late.store(s.late, Ordering::Relaxed);
    stats.recovered.store(s.recovered, Ordering::Relaxed);
    stats.duplicates.store(s.duplicates, Ordering::Relaxed);
    stats.trimmed.store(s.trimmed, Ordering::Relaxed);
    stats.depth.store(core.held(), Ordering::Relaxed);
    let micros =
        |cell: &AtomicU64, d: Duration| cell.store(d.as_micros() as u64, Ordering::Relaxed);
    micros(&stats.depth_us, f.depth);
    micros(&stats.target_us, f.target);
    micros(&stats.jitter_us, f.jitter);
    micros(&stats.worst_late_us, core.worst_lateness());
    stats
        .drift_ppm
        .store(f.drift_ppm.round() as i64, Ordering::Relaxed);
    stats.cushion.store(core.cushion(), Ordering::Relaxed);
}

/// One authenticated audio datagram from `udp`, or `None` (nothing within `wait`, or a datagram
/// that failed authentication: counted as dropped).
fn receive_one<'a>(
    udp: &UdpSocket,
    opener: &mut Opener,
    buf: &'a mut [u8],
    wait: Duration,
    stats: &PlayStats,
) -> Option<(u64, &'a [u8])> {
    match crate::engine::sock::recv_within(udp, buf, wait) {
        Ok(Some((n, _))) => {
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let audio = match opener.open(&mut buf[..n]) {
                Ok((Kind::Audio, body)) => split_position(body).ok(),
                _ => None,
            };
            if audio.is_none() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            audio
        }
        Ok(None) => None,
        Err(e) if is_timeout(&e) => None,
        // A refused port (ICMP) while the server restarts; the control loop decides.
        Err(e) => {
            tracing::debug!("UDP receive: {e}");
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn playout(
    udp: &UdpSocket,
    opener: &mut Opener,
    params: SessionParams,
    target: Duration,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    end: &Arc<AtomicU64>,
    stats: &Arc<PlayStats>,
) -> Result<Played, EngineError> {
    crate::engine::sock::prepare_for_polling(udp).map_err(EngineError::io("UDP socket"))?;
    let format = sink.format();
    let core = PlayoutCore::new(params, target, format, sink.clocked(), Instant::now())?;
    let (arrivals, from_network) = rtrb::RingBuffer::<Arrival>::new(ARRIVALS);
    let reached = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let puller = Box::new(PulledPlayout {
        core,
        arrivals: from_network,
        stats: stats.clone(),
        end: end.clone(),
        reached: reached.clone(),
        failed: failed.clone(),
        frames: 0,
        out: format,
        clocked: sink.clocked(),
    });
    let flags = Flags {
        stop,
        end,
        reached: &reached,
        failed: &failed,
    };
    // A device pulls from its callback; anything else (a file, the null sink, a device whose
    // stream is not running) is pulled by this thread, at each arrival and on the stream's
    // clock.
    let r = match sink.attach(puller) {
        Ok(()) => {
            let r = receive(udp, opener, sink, &flags, stats, arrivals, None);
            sink.detach();
            r
        }
        Err(puller) => {
            let packet_time = Duration::from_secs_f64(
                f64::from(params.frame_frames) / f64::from(params.sample_rate.max(1)),
            );
            // A file takes each packet as it arrives: the clock only releases what waited (a
            // gap given up after 200 ms, the end after 300 ms), for which 20 ms is close enough.
            let every = if sink.clocked() {
                packet_time
            } else {
                FILE_TICK
            };
            let packet = (f64::from(params.frame_frames) * f64::from(format.sample_rate)
                / f64::from(params.sample_rate.max(1)))
            .ceil() as usize;
            // A device takes a packet a tick; a file takes what is ready, mostly a packet, in
            // one pull when there is room for a few.
            let frames = if sink.clocked() { packet } else { 4 * packet };
            let pump = Pump {
                puller,
                out: vec![0.0; frames.max(1) * usize::from(format.channels.max(1))],
                every,
                next: Instant::now(),
            };
            receive(udp, opener, sink, &flags, stats, arrivals, Some(pump))
        }
    };
    // A lost device is not the session's end: it goes on once the device is back.
    if !matches!(r, Ok(Played::DeviceLost(_))) {
        log_session_end(stats, sink.underruns());
    }
    r
}

/// How a session's playout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Played {
    /// The announced end was played.
    Ended,
    /// Asked to stop.
    Stopped,
    /// The playback device's stream failed (why): open it again and go on.
    DeviceLost(String),
}

/// What the network thread watches besides the socket.
struct Flags<'a> {
    stop: &'a AtomicBool,
    end: &'a AtomicU64,
    /// The announced end has been played.
    reached: &'a AtomicBool,
    /// The playout failed to convert the audio.
    failed: &'a AtomicBool,
}

/// The playout pulled by the network thread for a sink with no callback of its own.
struct Pump {
    puller: Box<dyn crate::audio::Pull>,
    out: Vec<f32>,
    /// One packet's length: how often it pulls.
    every: Duration,
    next: Instant,
}

impl Pump {
    /// A sink with no clock (a file, the null sink) takes what is ready as soon as it is: at
    /// each arrival, and on the stream's clock for what waited (a gap given up, the stream's
    /// end). A device whose stream does not run its callback is pulled a packet at a time on
    /// the stream's clock, into its queue.
    fn run(&mut self, sink: &mut dyn Sink, arrived: bool) -> Result<(), EngineError> {
        let ch = usize::from(sink.format().channels.max(1));
        let now = Instant::now();
        if sink.clocked() {
            while self.next <= now {
                self.puller.pull(&mut self.out, self.next);
                self.next += self.every;
                sink.write(&self.out)?;
            }
            return Ok(());
        }
        if arrived || self.next <= now {
            self.next = now + self.every;
            loop {
                self.puller.pull(&mut self.out, now);
                let frames = self.puller.frames();
                sink.write(&self.out[..frames * ch])?;
                if frames * ch < self.out.len() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The network thread: authenticated audio goes to the playout, stamped with its arrival; it
/// also watches for the stream's end, publishes the device's delay, and, given a `pump`, pulls
/// the playout on the stream's clock and writes what it gives to `sink`.
fn receive(
    udp: &UdpSocket,
    opener: &mut Opener,
    sink: &mut dyn Sink,
    flags: &Flags<'_>,
    stats: &PlayStats,
    mut arrivals: rtrb::Producer<Arrival>,
    mut pump: Option<Pump>,
) -> Result<Played, EngineError> {
    let mut buf = [0u8; MAX_DATAGRAM + 64];
    let mut any_audio = false;
    let mut end_seen_at: Option<Instant> = None;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while !flags.stop.load(Ordering::Acquire) {
        // Only the socket wakes this thread (and the pump's clock, and a slow poll for stop and
        // the end).
        let wait = pump.as_ref().map_or(Duration::from_millis(50), |p| {
            p.next.saturating_duration_since(Instant::now())
        });
        let got = receive_one(udp, opener, &mut buf, wait, stats);
        let arrived = got.is_some();
        if let Some((position, samples)) = got {
            let at = Instant::now();
            let mut a = Arrival {
                at,
                position,
                len: samples.len().min(MAX_DATAGRAM),
                bytes: [0; MAX_DATAGRAM],
            };
            a.bytes[..a.len].copy_from_slice(&samples[..a.len]);
            if arrivals.push(a).is_err() {
                // The playout has not run for as long as the jitter buffer can hold.
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            any_audio = true;
        }
        if let Some(p) = pump.as_mut() {
            p.run(sink, arrived)?;
        }
        if flags.failed.load(Ordering::Acquire) {
            return Err(EngineError::Media(
                "converting the audio for the device failed".into(),
            ));
        }
        if let Some(why) = sink.fault() {
            return Ok(Played::DeviceLost(why));
        }
        if let Some(d) = sink.device_delay() {
            stats.device_delay.set(d);
        }
        let end_frames = flags.end.load(Ordering::Acquire);
        let now = Instant::now();
        if end_frames != NO_END {
            let seen = *end_seen_at.get_or_insert(now);
            // The playout plays up to the end (concealing what never came); nothing to wait
            // for when the stream ended before any audio arrived.
            if flags.reached.load(Ordering::Acquire)
                || end_frames == 0
                || (!any_audio && now.duration_since(seen) > END_GRACE)
            {
                return Ok(Played::Ended);
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(1);
            tracing::debug!(
                "depth {:.1} ms (set point {:.1}: the callback's {} frames + the tuner's; worst lateness {:.1} ms), jitter {:.2} ms, drift {:+} ppm, held {}, device {:?}",
                stats.depth_us.load(Ordering::Relaxed) as f64 / 1e3,
                stats.target_us.load(Ordering::Relaxed) as f64 / 1e3,
                stats.cushion.load(Ordering::Relaxed),
                stats.worst_late_us.load(Ordering::Relaxed) as f64 / 1e3,
                stats.jitter_us.load(Ordering::Relaxed) as f64 / 1e3,
                stats.drift_ppm.load(Ordering::Relaxed),
                stats.depth.load(Ordering::Relaxed),
                sink.device_delay(),
            );
        }
    }
    Ok(Played::Stopped)
}

fn log_session_end(stats: &PlayStats, underruns: u64) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        "session played {} packets: {} concealed, {} recovered (redundancy or FEC), {} late, {} duplicate, {} trimmed, {} device underrun samples",
        get(&stats.received),
        get(&stats.lost),
        get(&stats.recovered),
        get(&stats.late),
        get(&stats.duplicates),
        get(&stats.trimmed),
        underruns
    );
}
