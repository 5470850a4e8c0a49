//! The client's playout threads around [`crate::audio::playout`]: a network thread takes UDP
//! in, authenticates it and hands it to the playout, which the device's callback pulls (or, for
//! a file or the null sink, a pump on the stream's clock). The sink outlives sessions, so a
//! recording spans reconnections.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::supervise::Supervisor;
use super::{EngineError, Event};
use crate::audio::playout::NO_END;
use crate::audio::wake::Wake;
use crate::audio::{self, AudioHost, DeviceSpec, Sink, StreamFormat};
use crate::protocol::datagram::{Opener, MAX_DATAGRAM};
use crate::protocol::frame::SessionParams;
use crate::protocol::keys::DirectionKeys;

mod network;

use network::{playout, Played};

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
    pub(crate) device: Arc<super::DeviceCell>,
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
    host: AudioHost,
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
    /// The device played on in this run, if one opened.
    played_on: Option<String>,
}

impl Player {
    pub(crate) fn new(
        device: DeviceSpec,
        host: AudioHost,
        device_rate: Option<u32>,
        target: Duration,
    ) -> Self {
        Self {
            device,
            host,
            device_rate,
            target,
            sink: None,
            stream: None,
            period: None,
            running: None,
            stats: Arc::new(PlayStats::default()),
            bell: None,
            events: None,
            played_on: None,
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
        // A device that played in this run and is away now (the session was lost while it
        // was) is waited for; one that never opened is the wrong one, and the run ends.
        let (sink, away) = match self.sink.take() {
            Some(s) => (Some(s), None),
            None => {
                match audio::open_sink(self.host, &self.device, format, self.device_rate, period) {
                    Ok(s) => (Some(s), None),
                    Err(e) if self.played_on.is_some() => (None, Some(e.to_string())),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        self.stream = Some(format);
        self.period = Some(period);
        let desc = match &sink {
            Some(sink) => {
                let f = sink.format();
                self.played_on = Some(sink.describe());
                format!(
                    "{} at {} Hz, {} ch",
                    sink.describe(),
                    f.sample_rate,
                    f.channels
                )
            }
            None => "its playback device once it is back".to_owned(),
        };
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
            host: self.host,
            format,
            device_rate: self.device_rate,
            period,
        };
        let mut supervisor = Supervisor::new(
            true,
            self.played_on.clone().unwrap_or_default(),
            self.stats.device.clone(),
            self.events.clone(),
        );
        if let Some(why) = &away {
            supervisor.open_failed(why, "the session stays", Instant::now());
        }
        let thread = thread::Builder::new()
            .name("playout".into())
            .spawn(move || {
                let mut opener = opener;
                let mut sink = sink;
                // A device that fails is opened again when it returns; the session goes on.
                let r = loop {
                    if sink.is_none() {
                        sink = reopen.when_back(&mut supervisor, &udp, &s2, &e2);
                    }
                    let Some(s) = sink.as_mut() else { break Ok(()) };
                    match playout(
                        &udp,
                        &mut opener,
                        params,
                        target,
                        s.as_mut(),
                        &s2,
                        &e2,
                        &st2,
                    ) {
                        Ok(Played::DeviceLost(why)) => {
                            supervisor.failed(&why, "the session stays", Instant::now());
                            // The old stream is closed; let go of the device before opening it.
                            drop(sink.take());
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
    host: AudioHost,
    format: StreamFormat,
    device_rate: Option<u32>,
    period: Duration,
}

impl Reopen {
    /// Opens the device again when `supervisor` says, until it opens and stays up through
    /// its probation, or the session stops or its stream ends (`None` for those). Meanwhile
    /// the datagrams that come are let go: what the device could not play is not played late.
    fn when_back(
        &self,
        supervisor: &mut Supervisor,
        udp: &UdpSocket,
        stop: &AtomicBool,
        end: &AtomicU64,
    ) -> Option<Box<dyn Sink>> {
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
        const STAYS: &str = "the session stays";
        loop {
            idle(supervisor.next_attempt()?, &mut buf);
            if over() {
                return None;
            }
            let sink = match audio::open_sink(
                self.host,
                &self.device,
                self.format,
                self.device_rate,
                self.period,
            ) {
                Ok(sink) => sink,
                Err(e) => {
                    supervisor.open_failed(&e.to_string(), STAYS, Instant::now());
                    continue;
                }
            };
            supervisor.opened(sink.describe(), Instant::now());
            // A stream may open and fail at its first callbacks while a sound server settles
            // after a restart: it is back once it has run through its probation.
            idle(supervisor.probation_ends()?, &mut buf);
            match sink.fault() {
                Some(why) => {
                    supervisor.failed(&why, STAYS, Instant::now());
                }
                None if supervisor.tick(Instant::now()) => return Some(sink),
                // Stopped during the probation.
                None => return None,
            }
        }
    }
}
