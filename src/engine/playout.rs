//! The client's playout thread: UDP in, authenticated and de-jittered, converted to the device's
//! format, out to the sink. The sink outlives sessions, so a recording spans reconnections.

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::EngineError;
use crate::audio::convert::{i16_to_f32, map_channels};
use crate::audio::jitter::{JitterBuffer, Popped};
use crate::audio::resample::RateConverter;
use crate::audio::{self, DeviceSpec, Sink, StreamFormat};
use crate::protocol::datagram::{read_audio_body, Kind, Opener, MAX_DATAGRAM};
use crate::protocol::frame::SessionParams;
use crate::protocol::keys::DirectionKeys;

/// Sentinel: no end of stream announced.
const NO_END: u64 = u64::MAX;
/// The most the playout depth grows to when packets come late.
const MAX_GROWN_TARGET: Duration = Duration::from_millis(100);
/// After an end of stream, a gap with no datagram this long is concealed rather than awaited.
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
}

struct Running {
    stop: Arc<AtomicBool>,
    end: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<(Box<dyn Sink>, Result<(), EngineError>)>,
}

/// Owns the sink across sessions and runs one playout thread per session.
pub(crate) struct Player {
    device: DeviceSpec,
    device_rate: Option<u32>,
    target: Duration,
    sink: Option<Box<dyn Sink>>,
    stream: Option<StreamFormat>,
    running: Option<Running>,
    pub(crate) stats: Arc<PlayStats>,
}

impl Player {
    pub(crate) fn new(device: DeviceSpec, device_rate: Option<u32>, target: Duration) -> Self {
        Self {
            device,
            device_rate,
            target,
            sink: None,
            stream: None,
            running: None,
            stats: Arc::new(PlayStats::default()),
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
        let format = StreamFormat {
            sample_rate: params.sample_rate,
            channels: u16::from(params.channels),
        };
        if self.stream != Some(format) {
            if let Some(mut old) = self.sink.take() {
                if matches!(self.device, DeviceSpec::Wav(_)) {
                    let _ = old.finish();
                    return Err(EngineError::Audio(
                        "the stream's format changed; a WAV recording cannot follow".into(),
                    ));
                }
                let _ = old.finish();
            }
        }
        let sink = match self.sink.take() {
            Some(s) => s,
            None => audio::open_sink(&self.device, format, self.device_rate)?,
        };
        self.stream = Some(format);
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
        let (s2, e2, d2, st2, target) = (
            stop.clone(),
            end.clone(),
            done.clone(),
            self.stats.clone(),
            self.target,
        );
        let thread = thread::Builder::new()
            .name("playout".into())
            .spawn(move || {
                let mut sink = sink;
                let r = playout(&udp, opener, params, target, sink.as_mut(), &s2, &e2, &st2);
                d2.store(true, Ordering::Release);
                (sink, r)
            })
            .map_err(|e| EngineError::Io(e.to_string()))?;
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
                self.sink = Some(sink);
                result
            }
            Err(_) => Err(EngineError::Audio("the playout thread panicked".into())),
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

struct Converter {
    from: StreamFormat,
    to: StreamFormat,
    rate: RateConverter,
    f32_in: Vec<f32>,
    mapped: Vec<f32>,
    out: Vec<f32>,
}

impl Converter {
    fn new(from: StreamFormat, to: StreamFormat, chunk: usize) -> Result<Self, EngineError> {
        Ok(Self {
            from,
            to,
            rate: RateConverter::new(
                from.sample_rate,
                to.sample_rate,
                usize::from(to.channels),
                chunk,
            )?,
            f32_in: Vec::with_capacity(chunk * usize::from(from.channels)),
            mapped: Vec::with_capacity(chunk * usize::from(to.channels)),
            out: Vec::with_capacity(chunk * usize::from(to.channels) * 8),
        })
    }

    /// Converts and writes; returns the frames the sink took.
    fn write(&mut self, pcm: &[i16], sink: &mut dyn Sink) -> Result<usize, EngineError> {
        self.f32_in.clear();
        self.f32_in.extend(pcm.iter().map(|&s| i16_to_f32(s)));
        self.mapped.clear();
        map_channels(
            &self.f32_in,
            usize::from(self.from.channels),
            usize::from(self.to.channels),
            &mut self.mapped,
        );
        self.out.clear();
        self.rate.process(&self.mapped, &mut self.out)?;
        Ok(sink.write(&self.out)?)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[allow(clippy::too_many_arguments)]
fn playout(
    udp: &UdpSocket,
    mut opener: Opener,
    params: SessionParams,
    target: Duration,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    end: &AtomicU64,
    stats: &PlayStats,
) -> Result<(), EngineError> {
    let ff = u64::from(params.frame_frames);
    let ch = usize::from(params.channels);
    let stream = StreamFormat {
        sample_rate: params.sample_rate,
        channels: u16::from(params.channels),
    };
    let mut conv = Converter::new(stream, sink.format(), usize::from(params.frame_frames))?;
    let mut jb = JitterBuffer::new(ff as usize * ch, target, Instant::now());
    let clocked = sink.clocked();
    let sink_rate = f64::from(sink.format().sample_rate);
    let mut target_frames = (target.as_secs_f64() * sink_rate) as usize;
    // A packet that arrives after it was concealed says the queue is too shallow for this
    // network and these devices: deepen it by one packet each time, up to a bound. (Shrinking
    // back when things calm down comes with the adaptive jitter buffer.)
    let step =
        (f64::from(params.frame_frames) * sink_rate / f64::from(params.sample_rate)) as usize;
    let max_target = (MAX_GROWN_TARGET.as_secs_f64() * sink_rate) as usize;
    let mut late_seen = 0u64;
    let mut underruns_seen = 0u64;
    let mut received_any = false;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    let mut written_frames = 0usize;
    let mut reported = (0u64, 0usize);
    let started = Instant::now();
    // A device needs feeding every few milliseconds; a file only when data comes.
    let wait = if clocked {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(20)
    };
    super::sock::prepare_for_polling(udp)
        .map_err(|e| EngineError::Io(format!("UDP socket: {e}")))?;
    let mut buf = [0u8; MAX_DATAGRAM + 64];
    let mut pcm = Vec::with_capacity(ff as usize * ch);
    let mut last_datagram = Instant::now();
    let mut end_seen_at: Option<Instant> = None;

    while !stop.load(Ordering::Acquire) {
        let got = super::sock::recv_within(udp, &mut buf, wait);
        if let Ok(Some((n, _))) = got {
            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        match got {
            Ok(None) => {}
            Ok(Some((n, _))) => match opener.open(&mut buf[..n]) {
                Ok((Kind::Audio, body)) => match read_audio_body(body) {
                    Ok((position, _)) if position % ff != 0 => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((position, samples)) => {
                        let now = Instant::now();
                        jb.push(position / ff, samples, now);
                        // Bursty arrival (a capture that delivers several packets at once, a
                        // busy network) needs a queue that spans the longest silence between
                        // bursts: learn it from the first bursts instead of from dropouts.
                        if clocked && received_any {
                            let gap = (now - last_datagram).as_secs_f64() * sink_rate;
                            let needed = (gap as usize + step).min(max_target);
                            if needed > target_frames {
                                target_frames = needed;
                                tracing::debug!(
                                    "arrival gap {:.1} ms: playout depth now {:.1} ms",
                                    gap * 1000.0 / sink_rate,
                                    target_frames as f64 * 1000.0 / sink_rate
                                );
                            }
                        }
                        received_any = true;
                        last_datagram = now;
                    }
                    Err(_) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                },
                _ => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if is_timeout(&e) => {}
            // A refused port (ICMP) while the server restarts; the control loop decides.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }

        let end_frames = end.load(Ordering::Acquire);
        let now = Instant::now();
        if end_frames != NO_END {
            let seen = *end_seen_at.get_or_insert(now);
            let reached = jb.next_seq().is_some_and(|n| n * ff >= end_frames);
            // Nothing to wait for: the stream ended before any packet arrived, or has been played.
            if reached
                || end_frames == 0
                || (jb.next_seq().is_none() && now.duration_since(seen) > END_GRACE)
            {
                log_session_end(&jb, sink);
                return Ok(());
            }
        }
        loop {
            // A device: keep its queue topped up to the target depth with packets in order, and
            // conceal a missing packet only when the queue is about to run dry; a file: write as
            // soon as packets are in order.
            let queued = if clocked { sink.queued_frames() } else { 0 };
            let low_water = if clocked { sink.low_water_frames() } else { 0 };
            if clocked && queued >= low_water + target_frames {
                break;
            }
            let force = (clocked && queued < low_water)
                || (end_frames != NO_END && now.duration_since(last_datagram) > END_GRACE);
            let Some(p) = jb.pop(now, force, &mut pcm) else {
                break;
            };
            let seq = match p {
                Popped::Played(s) | Popped::Concealed(s) => s,
            };
            let start = seq * ff;
            if start >= end_frames {
                break;
            }
            let frames = (end_frames - start).min(ff) as usize;
            written_frames += conv.write(&pcm[..(frames * ch).min(pcm.len())], sink)?;
            if start + ff >= end_frames {
                break;
            }
        }
        let s = jb.stats();
        if now >= next_report {
            next_report += Duration::from_secs(1);
            tracing::debug!(
                "last second: {} packets in, {} frames out, queued {}, depth {}",
                s.received - reported.0,
                written_frames - reported.1,
                sink.queued_frames(),
                jb.depth()
            );
            reported = (s.received, written_frames);
        }
        if clocked && sink.underruns() > underruns_seen {
            let u = sink.underruns();
            tracing::debug!(
                "t={:.3}s device underrun +{} samples (queued {}, low water {}, target {}, depth {})",
                started.elapsed().as_secs_f64(),
                u - underruns_seen,
                sink.queued_frames(),
                sink.low_water_frames(),
                target_frames,
                jb.depth()
            );
            underruns_seen = u;
        }
        if clocked && s.late > late_seen {
            late_seen = s.late;
            if target_frames + step <= max_target {
                target_frames += step;
                tracing::debug!(
                    "late packet: playout depth now {:.1} ms",
                    target_frames as f64 * 1000.0 / sink_rate
                );
            }
        }
        stats.received.store(s.received, Ordering::Relaxed);
        stats.lost.store(s.lost, Ordering::Relaxed);
        stats.depth.store(jb.depth(), Ordering::Relaxed);
    }
    log_session_end(&jb, sink);
    Ok(())
}

fn log_session_end(jb: &JitterBuffer, sink: &dyn Sink) {
    let s = jb.stats();
    tracing::info!(
        "session played {} packets: {} concealed, {} late, {} duplicate, {} device underrun samples",
        s.received,
        s.lost,
        s.late,
        s.duplicates,
        sink.underruns()
    );
}
