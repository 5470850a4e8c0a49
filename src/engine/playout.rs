//! The client's playout threads around [`crate::audio::playout`]: a network thread takes UDP
//! in, authenticates it and hands it to the playout, which the device's callback pulls (or, for
//! a file or the null sink, a pump on the stream's clock). The sink outlives sessions, so a
//! recording spans reconnections.

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{DeviceState, EngineError, Event};
use crate::audio::health::Retry;
use crate::audio::playout::{PlayoutCore, NO_END};
use crate::audio::stamp::shift;
use crate::audio::wake::Wake;
use crate::audio::{self, DeviceSpec, Sink, StreamFormat};
use crate::protocol::datagram::{split_position, Kind, Opener, MAX_DATAGRAM};
use crate::protocol::frame::SessionParams;
use crate::protocol::keys::DirectionKeys;

/// How often a file's pump looks for what waited, between arrivals.
const FILE_TICK: Duration = Duration::from_millis(20);
/// After an end of stream that came before any audio, how long to wait for some.
const END_GRACE: Duration = Duration::from_millis(300);

/// Counters the control loop reads.
#[derive(Debug, Default)]
pub(crate) struct PlayStats {
    pub(crate) received: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) depth: AtomicUsize,
    /// UDP payload bytes received, every datagram counted.
    pub(crate) bytes: AtomicU64,
    /// Packets that came after their turn.
    pub(crate) late: AtomicU64,
    /// Lost packets recovered (redundancy or Opus FEC).
    pub(crate) recovered: AtomicU64,
    /// Packets that came twice.
    pub(crate) duplicates: AtomicU64,
    /// Packets left out to drain excess depth.
    pub(crate) trimmed: AtomicU64,
    /// Audio buffered after the network, smoothed (µs).
    pub(crate) depth_us: AtomicU64,
    /// What the latency tuner holds (µs).
    pub(crate) target_us: AtomicU64,
    /// Interarrival jitter (µs).
    pub(crate) jitter_us: AtomicU64,
    /// The sender's clock against the device's (ppm).
    pub(crate) drift_ppm: AtomicI64,
    /// The playback device's own delay, once reported.
    pub(crate) device_delay: crate::audio::DelayCell,
    /// Whether the playback device works.
    pub(crate) device: super::DeviceCell,
    /// A stream position and when it leaves the device (the playout's clock for the latency).
    pub(crate) played: crate::audio::stamp::StampCell,
    /// The worst lateness the tuner has seen lately (µs), and what is held for the device
    /// beyond the tuner's target (frames): the parts of the set point, for the debug log.
    pub(crate) worst_late_us: AtomicU64,
    pub(crate) cushion: AtomicUsize,
}

/// What a playout thread gives back: the sink (none if its device was lost and had not come
/// back when the thread ended), and how the session's playout ended.
type Finished = (Option<Box<dyn Sink>>, Result<(), EngineError>);

struct Running {
    stop: Arc<AtomicBool>,
    end: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<Finished>,
}

/// Owns the sink across sessions and runs one playout thread per session.
pub(crate) struct Player {
    device: DeviceSpec,
    device_rate: Option<u32>,
    target: Duration,
    sink: Option<Box<dyn Sink>>,
    stream: Option<StreamFormat>,
    /// The device period its sink was opened with.
    period: Option<Duration>,
    running: Option<Running>,
    pub(crate) stats: Arc<PlayStats>,
    /// Rung when a playout thread ends.
    pub(crate) bell: Option<Arc<Wake>>,
    /// Where a lost and a returning device are told.
    pub(crate) events: Option<Sender<Event>>,
}

impl Player {
    pub(crate) fn new(device: DeviceSpec, device_rate: Option<u32>, target: Duration) -> Self {
        Self {
            device,
            device_rate,
            target,
            sink: None,
            stream: None,
            period: None,
            running: None,
            stats: Arc::new(PlayStats::default()),
            bell: None,
            events: None,
        }
    }

    /// Starts playing a session's datagrams from `udp`.
    pub(crate) fn begin(
        &mut self,
        params: SessionParams,
        keys: &DirectionKeys,
        udp: UdpSocket,
    ) -> Result<String, EngineError> {
        self.end_session()?;
        // The last session's positions mean nothing in this one.
        self.stats.played.clear();
        let format = StreamFormat {
            sample_rate: params.sample_rate,
            channels: u16::from(params.channels),
        };
        let period = audio::device_period(Duration::from_secs_f64(
            f64::from(params.frame_frames) / f64::from(params.sample_rate.max(1)),
        ));
        // A device follows the packets' length too (a file does not care).
        let new_period = self.period != Some(period) && !matches!(self.device, DeviceSpec::Wav(_));
        if self.stream != Some(format) || new_period {
            if let Some(mut old) = self.sink.take() {
                if matches!(self.device, DeviceSpec::Wav(_)) && self.stream != Some(format) {
                    let _ = old.finish();
                    return Err(EngineError::Media(
                        "the stream's format changed; a WAV recording cannot follow".into(),
                    ));
                }
                let _ = old.finish();
            }
        }
        let sink = match self.sink.take() {
            Some(s) => s,
            None => audio::open_sink(&self.device, format, self.device_rate, period)?,
        };
        self.stream = Some(format);
        self.period = Some(period);
        let f = sink.format();
        let desc = format!(
            "{} at {} Hz, {} ch",
            sink.describe(),
            f.sample_rate,
            f.channels
        );
        let opener = Opener::new(params.mode, params.session_id, keys);
        let stop = Arc::new(AtomicBool::new(false));
        let end = Arc::new(AtomicU64::new(NO_END));
        let done = Arc::new(AtomicBool::new(false));
        let (s2, e2, d2, st2, target, bell) = (
            stop.clone(),
            end.clone(),
            done.clone(),
            self.stats.clone(),
            self.target,
            self.bell.clone(),
        );
        let reopen = Reopen {
            device: self.device.clone(),
            format,
            device_rate: self.device_rate,
            period,
            state: self.stats.clone(),
            events: self.events.clone(),
        };
        let thread = thread::Builder::new()
            .name("playout".into())
            .spawn(move || {
                let mut opener = opener;
                let mut sink = Some(sink);
                // A device that fails is opened again when it returns; the session goes on.
                let r = loop {
                    let Some(s) = sink.as_mut() else { break Ok(()) };
                    match playout(&udp, &mut opener, params, target, s.as_mut(), &s2, &e2, &st2) {
                        Ok(Played::DeviceLost(why)) => {
                            let device = s.describe();
                            tracing::warn!(
                                "the playback device {device} is lost ({why}); the session stays while it is looked for again"
                            );
                            reopen.tell(DeviceState::Lost, Event::DeviceLost { playback: true, device });
                            // The old stream is closed; let go of the device before opening it.
                            drop(sink.take());
                            sink = reopen.when_back(&udp, &s2, &e2);
                        }
                        Ok(Played::Ended | Played::Stopped) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                d2.store(true, Ordering::Release);
                super::ring(bell.as_deref());
                (sink, r)
            })
            .map_err(EngineError::io("cannot start the playout thread"))?;
        self.running = Some(Running {
            stop,
            end,
            done,
            thread,
        });
        Ok(desc)
    }

    /// Announces the stream's end: play up to `end` frames, then the thread finishes by itself.
    pub(crate) fn set_end(&self, end: u64) {
        if let Some(r) = &self.running {
            r.end.store(end, Ordering::Release);
        }
    }

    /// True once the playout thread has finished (end of stream reached, or an error).
    pub(crate) fn is_done(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.done.load(Ordering::Acquire))
    }

    /// Stops the session's playout thread and takes the sink back.
    pub(crate) fn end_session(&mut self) -> Result<(), EngineError> {
        let Some(r) = self.running.take() else {
            return Ok(());
        };
        r.stop.store(true, Ordering::Release);
        match r.thread.join() {
            Ok((sink, result)) => {
                self.sink = sink;
                result
            }
            Err(_) => Err(EngineError::Media("the playout thread panicked".into())),
        }
    }

    /// Ends the session and finalises the sink (a WAV's header is written here).
    pub(crate) fn finish(&mut self) -> Result<(), EngineError> {
        let r = self.end_session();
        if let Some(mut s) = self.sink.take() {
            s.finish()?;
        }
        r
    }
}

/// How to open a lost playback device again.
struct Reopen {
    device: DeviceSpec,
    format: StreamFormat,
    device_rate: Option<u32>,
    period: Duration,
    /// Where the device's state is shown.
    state: Arc<PlayStats>,
    events: Option<Sender<Event>>,
}

impl Reopen {
    /// Shows the device's new state and tells the front end.
    fn tell(&self, state: DeviceState, event: Event) {
        self.state.device.set(state);
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Opens the device again on the [`Retry`] schedule, until it opens, the session stops or
    /// its stream ends (`None` for those). Meanwhile the datagrams that come are let go: what
    /// the device could not play is not played late.
    fn when_back(
        &self,
        udp: &UdpSocket,
        stop: &AtomicBool,
        end: &AtomicU64,
    ) -> Option<Box<dyn Sink>> {
        let mut retry = Retry::default();
        let mut next = Instant::now() + retry.next_delay();
        let mut buf = [0u8; MAX_DATAGRAM + 64];
        let over = || stop.load(Ordering::Acquire) || end.load(Ordering::Acquire) != NO_END;
        // Sleeps on the socket until `until`, a tenth of a second at a time to see a stop.
        let idle = |until: Instant, buf: &mut [u8]| {
            while !over() && Instant::now() < until {
                let wait = until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                let _ = super::sock::recv_within(udp, buf, wait);
            }
        };
        loop {
            idle(next, &mut buf);
            if over() {
                return None;
            }
            let opened = audio::open_sink(&self.device, self.format, self.device_rate, self.period);
            next = Instant::now() + retry.next_delay();
            let sink = match opened {
                Ok(sink) => sink,
                Err(e) => {
                    tracing::debug!("playback device: {e}");
                    self.state.device.set(DeviceState::Reopening);
                    continue;
                }
            };
            // A stream may open and fail at its first callbacks while a sound server settles
            // after a restart: it is back once it has run for a while.
            idle(Instant::now() + Retry::PROBATION, &mut buf);
            if let Some(why) = sink.fault() {
                tracing::debug!("playback device failed again at once: {why}");
                self.state.device.set(DeviceState::Reopening);
                // It opens, so what it needs is coming back: look again soon.
                retry = Retry::default();
                next = Instant::now() + retry.next_delay();
                continue;
            }
            let device = sink.describe();
            tracing::info!("the playback device is back: {device}");
            self.tell(
                DeviceState::Ok,
                Event::DeviceBack {
                    playback: true,
                    device,
                },
            );
            return Some(sink);
        }
    }
}

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
    match super::sock::recv_within(udp, buf, wait) {
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
fn playout(
    udp: &UdpSocket,
    opener: &mut Opener,
    params: SessionParams,
    target: Duration,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    end: &Arc<AtomicU64>,
    stats: &Arc<PlayStats>,
) -> Result<Played, EngineError> {
    super::sock::prepare_for_polling(udp).map_err(EngineError::io("UDP socket"))?;
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
enum Played {
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
