//! Audio behind two small traits: a [`Source`] captures, a [`Sink`] plays.
//!
//! Backends are chosen by the device spec of `-d` (DESIGN.md §3.1): `wav:PATH`, `tone:HZ`, `null`,
//! or a cpal device (`default`, an index, or text matched against ids and names). Only
//! `cpal_backend` names cpal. Device callbacks never lock, allocate or log: they move samples
//! through preallocated SPSC rings (rtrb) and count under- and overruns in atomics.

pub mod adapt;
pub mod cable;
pub mod codec;
pub mod conceal;
pub mod convert;
pub mod cpal_backend;
pub mod health;
mod host;
pub mod jitter;
pub mod paced;
pub mod playout;
pub mod resample;
pub mod stamp;
pub mod virtual_mic;
pub mod wake;
pub mod wav;

pub use host::AudioHost;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

/// Errors from audio devices and files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// No device matched the spec.
    #[error("no {kind} device matches {spec:?} (see --list-devices)")]
    NoDevice {
        /// `input` or `output`.
        kind: &'static str,
        /// What was asked for.
        spec: String,
    },
    /// More than one device matched the spec.
    #[error(
        "{spec:?} matches several {kind} devices: {candidates}; give more of the name or the index"
    )]
    Ambiguous {
        /// `input` or `output`.
        kind: &'static str,
        /// What was asked for.
        spec: String,
        /// The matching ids.
        candidates: String,
    },
    /// The device spec itself is malformed.
    #[error("bad device {0:?}: expected an index, a name, default, wav:PATH, tone:HZ or null")]
    BadSpec(String),
    /// Capturing what an output device plays is not possible here.
    #[error("cannot capture what output device {0:?} plays on this system: {1}")]
    NoLoopback(String, String),
    /// A format the backend cannot handle.
    #[error("unsupported audio format: {0}")]
    Format(String),
    /// A WAV file could not be read or written.
    #[error("WAV file {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: hound::Error,
    },
    /// The audio host asked for (`--audio-host`, named first) is not running or not built in.
    #[error("audio host {0}: {1}")]
    Host(&'static str, String),
    /// The audio host reported an error.
    #[error("audio device {device:?}: {message}")]
    Backend {
        /// The device.
        device: String,
        /// The host's words.
        message: String,
    },
}

/// Sample rate and channel count of interleaved audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
}

/// Whether a device spec names an input (capture) or an output (playback) device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A microphone or line in.
    #[default]
    Input,
    /// Speakers or headphones (for a server: capture what it plays).
    Output,
}

impl DeviceKind {
    /// `input` or `output`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Input => "input",
            DeviceKind::Output => "output",
        }
    }
}

/// A parsed `-d` value.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// The host's default device.
    Default,
    /// A file: streamed by a server, recorded by a client.
    Wav(PathBuf),
    /// A sine at this frequency (server only).
    Tone(f32),
    /// Silence in, nothing out.
    Null,
    /// A device by index from `--list-devices`.
    Index(usize),
    /// A device by id or name (exact, else a unique part).
    Name(String),
}

impl DeviceSpec {
    /// Parses the text of `-d`.
    ///
    /// # Errors
    /// [`AudioError::BadSpec`] for an empty path, a non-positive tone or an empty name.
    pub fn parse(text: &str) -> Result<Self, AudioError> {
        let t = text.trim();
        let bad = || AudioError::BadSpec(text.to_owned());
        if t.is_empty() || t.eq_ignore_ascii_case("default") {
            return Ok(Self::Default);
        }
        if t.eq_ignore_ascii_case("null") {
            return Ok(Self::Null);
        }
        if let Some(p) = t.strip_prefix("wav:") {
            return if p.is_empty() {
                Err(bad())
            } else {
                Ok(Self::Wav(PathBuf::from(p)))
            };
        }
        if let Some(hz) = t.strip_prefix("tone:") {
            let hz: f32 = hz.parse().map_err(|_| bad())?;
            return if hz.is_finite() && hz > 0.0 && hz < 96_000.0 {
                Ok(Self::Tone(hz))
            } else {
                Err(bad())
            };
        }
        if let Ok(i) = t.parse::<usize>() {
            return Ok(Self::Index(i));
        }
        Ok(Self::Name(t.to_owned()))
    }
}

/// Where a capture's samples come from.
enum Feed {
    /// A device callback pushes into an SPSC ring in real time.
    Ring {
        consumer: rtrb::Consumer<i16>,
        ended: Arc<AtomicBool>,
        /// Frames read from the ring so far.
        consumed: u64,
    },
    /// A generator (file, tone, silence) the reader pulls on the capture clock: no thread, no
    /// ring, no extra wake-ups.
    Pull {
        gen: paced::Generator,
        start: Option<std::time::Instant>,
        produced: u64,
    },
    /// The last frame has been read.
    Ended,
}

/// What [`Capture::next_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `out` holds a whole frame.
    Full,
    /// The stream ended: `out[..n]` (whole frames, maybe none) are its last samples.
    Last(usize),
    /// Not enough yet: try again after this long.
    Wait(std::time::Duration),
    /// Nothing more will come.
    Ended,
}

/// A running capture; dropping it stops the device.
pub struct Capture {
    feed: Feed,
    /// The format of what arrives.
    pub format: StreamFormat,
    /// Samples the source could not deliver in time (device ring full).
    pub overruns: Arc<AtomicU64>,
    /// What the device reports between a sample's capture and its callback (never reported
    /// by sources that are not devices).
    pub device_delay: Arc<DelayCell>,
    /// Signalled by the device callback whenever it delivers (a device on Linux).
    wake: Option<Arc<wake::Wake>>,
    /// The device callback's count of frames delivered and when the first of its last
    /// delivery entered the device (a device that reports it).
    clock: Option<Arc<stamp::StampCell>>,
    /// When the first sample of the frame last read entered the source.
    captured_at: Option<std::time::Instant>,
    /// The device stream's health (a device's).
    health: Option<Arc<health::Health>>,
    _guard: Box<dyn Send>,
}

/// How often a device capture without a wake-up is polled while a frame is partly captured.
const PARTIAL_POLL: std::time::Duration = std::time::Duration::from_micros(500);
/// How long, at least, a capture with a wake-up waits for it while a frame is partly captured
/// (a guard: the device's next delivery ends the wait).
const WAKE_GUARD: std::time::Duration = std::time::Duration::from_millis(20);

/// A delay a device reports, shared between its callback and the threads that read it:
/// lock-free (one relaxed atomic), and "not reported" until the first [`DelayCell::set`].
#[derive(Debug)]
pub struct DelayCell(AtomicU64);

impl Default for DelayCell {
    fn default() -> Self {
        Self(AtomicU64::new(u64::MAX))
    }
}

impl DelayCell {
    /// Records a delay (real-time safe: one atomic store).
    pub fn set(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1);
        self.0
            .store(us.min(u64::MAX - 1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The last delay recorded, if any.
    pub fn get(&self) -> Option<std::time::Duration> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capture {{ format: {:?} }}", self.format)
    }
}

impl Capture {
    /// A capture fed by a device callback through `consumer`.
    pub fn from_ring(
        consumer: rtrb::Consumer<i16>,
        format: StreamFormat,
        overruns: Arc<AtomicU64>,
        device_delay: Arc<DelayCell>,
        wake: Option<Arc<wake::Wake>>,
        guard: Box<dyn Send>,
    ) -> Self {
        let ended = Arc::new(AtomicBool::new(false));
        Self {
            feed: Feed::Ring {
                consumer,
                ended,
                consumed: 0,
            },
            format,
            overruns,
            device_delay,
            wake,
            clock: None,
            captured_at: None,
            health: None,
            _guard: guard,
        }
    }

    /// The same capture, with its device stream's health.
    #[must_use]
    pub fn with_health(mut self, health: Arc<health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Why the device's stream failed, once it has and is closed: it delivers nothing more,
    /// and the device may be opened again.
    pub fn fault(&self) -> Option<String> {
        self.health.as_ref().and_then(|h| h.closed())
    }

    /// The same capture, with the device callback's delivery clock: it records the count of
    /// frames delivered before each delivery, and when the delivery's first frame entered the
    /// device.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<stamp::StampCell>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// When the first sample of the frame [`Capture::next_frame`] last gave entered the source
    /// (a device's input, as the device reports it; a generator's schedule), if known.
    pub fn captured_at(&self) -> Option<std::time::Instant> {
        self.captured_at
    }

    /// What the device signals when it delivers, if it does: poll it rather than a timer.
    pub fn wake(&self) -> Option<&wake::Wake> {
        self.wake.as_deref()
    }

    /// A capture pulled from `gen` at `format`'s real-time rate, from the first read on.
    pub fn paced(format: StreamFormat, gen: paced::Generator) -> Self {
        Self {
            feed: Feed::Pull {
                gen,
                start: None,
                produced: 0,
            },
            format,
            overruns: Arc::new(AtomicU64::new(0)),
            device_delay: Arc::new(DelayCell::default()),
            wake: None,
            clock: None,
            captured_at: None,
            health: None,
            _guard: Box::new(()),
        }
    }

    /// Reads the next frame (`out.len()` interleaved samples) if it is due.
    pub fn next_frame(&mut self, now: std::time::Instant, out: &mut [i16]) -> Frame {
        let ch = usize::from(self.format.channels.max(1));
        let rate = f64::from(self.format.sample_rate);
        let frames = (out.len() / ch) as u64;
        let (frame, done) = match &mut self.feed {
            Feed::Ended => return Frame::Ended,
            Feed::Ring {
                consumer,
                ended,
                consumed,
            } => {
                // A packet's worth before the callback wakes us (said before looking).
                if let Some(w) = &self.wake {
                    w.want(out.len());
                }
                let slots = consumer.slots();
                if slots >= out.len() {
                    if let Ok(chunk) = consumer.read_chunk(out.len()) {
                        let (a, b) = chunk.as_slices();
                        out[..a.len()].copy_from_slice(a);
                        out[a.len()..].copy_from_slice(b);
                        chunk.commit_all();
                    }
                    // From the callback's last stamp, at the stream's rate.
                    let first = *consumed;
                    *consumed += frames;
                    self.captured_at =
                        self.clock
                            .as_ref()
                            .and_then(|c| c.read())
                            .and_then(|(delivered, at)| {
                                let ahead = i64::try_from(first).unwrap_or(i64::MAX)
                                    - i64::try_from(delivered).unwrap_or(i64::MAX);
                                stamp::shift(at, ahead, self.format.sample_rate)
                            });
                    (Frame::Full, false)
                } else if ended.load(std::sync::atomic::Ordering::Acquire) {
                    let left = slots / ch * ch;
                    for s in out.iter_mut().take(left) {
                        *s = consumer.pop().unwrap_or(0);
                    }
                    (Frame::Last(left), true)
                } else {
                    let missing = (out.len() - slots) / ch;
                    let mut wait = std::time::Duration::from_secs_f64(missing as f64 / rate);
                    if self.wake.is_none() {
                        // No wake-up from the device (not Linux): poll often while a frame is
                        // partly there, so that a packet never waits a whole device period
                        // for a guess of when the rest will come.
                        wait = wait.min(PARTIAL_POLL);
                    } else {
                        // The device says when it delivers: a timer set for the missing
                        // samples fires before that whenever the callbacks run a little late
                        // or are not the packet's length. Through the ALSA plug-ins, 5 ms
                        // packets on 5 ms periods woke the media thread 304 (pipewire) and
                        // 481 (pulse) times a second with it, 205 and 230 without; 256-frame
                        // callbacks under 240-frame packets, 684 and 189. A guard remains.
                        wait = wait.max(WAKE_GUARD);
                    }
                    (Frame::Wait(wait), false)
                }
            }
            Feed::Pull {
                gen,
                start,
                produced,
            } => {
                let start = *start.get_or_insert(now);
                let due_at =
                    start + std::time::Duration::from_secs_f64((*produced + frames) as f64 / rate);
                if now < due_at {
                    (Frame::Wait(due_at - now), false)
                } else {
                    // A generator's sample is "captured" on its schedule.
                    self.captured_at =
                        Some(start + std::time::Duration::from_secs_f64(*produced as f64 / rate));
                    let n = gen(out) / ch * ch;
                    *produced += (n / ch) as u64;
                    if n < out.len() {
                        (Frame::Last(n), true)
                    } else {
                        (Frame::Full, false)
                    }
                }
            }
        };
        if done {
            self.feed = Feed::Ended;
        }
        frame
    }
}

/// Something that captures audio.
pub trait Source: Send {
    /// What the capture will deliver.
    fn format(&self) -> StreamFormat;
    /// A description for logs and the status line.
    fn describe(&self) -> String;
    /// Starts capturing.
    ///
    /// # Errors
    /// [`AudioError`] when the device cannot be opened.
    fn start(self: Box<Self>) -> Result<Capture, AudioError>;
}

/// Something that plays (or records) audio, fed with interleaved f32 samples in `format()`.
pub trait Sink: Send {
    /// The format `write` takes (for a device: what it was opened with).
    fn format(&self) -> StreamFormat;
    /// A description for logs and the status line.
    fn describe(&self) -> String;
    /// True for a device that consumes in real time; false for a file, which takes data as fast
    /// as it comes and so needs no pacing.
    fn clocked(&self) -> bool;
    /// Writes interleaved samples; returns the frames taken (a full device ring takes fewer).
    ///
    /// # Errors
    /// [`AudioError`] on a write failure.
    fn write(&mut self, samples: &[f32]) -> Result<usize, AudioError>;
    /// What the device reports between a sample's callback and its playing, once known.
    fn device_delay(&self) -> Option<std::time::Duration> {
        None
    }
    /// Samples the device had to make up with silence.
    fn underruns(&self) -> u64 {
        0
    }
    /// Why the device's stream failed, once it has and is closed: it plays nothing more, and
    /// the device may be opened again. Files and the null sink never fail this way.
    fn fault(&self) -> Option<String> {
        None
    }
    /// Flushes and closes (a WAV's header is finalised here).
    ///
    /// # Errors
    /// [`AudioError`] on a write failure.
    fn finish(&mut self) -> Result<(), AudioError>;
    /// Hands a device the [`Pull`] its callback should call for audio from now on, in place of
    /// what [`Sink::write`] queues. A sink with no callback (a file, the null sink) gives it
    /// back.
    ///
    /// # Errors
    /// The puller itself, when this sink does not pull.
    fn attach(&mut self, puller: Box<dyn Pull>) -> Result<(), Box<dyn Pull>> {
        Err(puller)
    }
    /// Stops calling the attached [`Pull`] (from the next callback on).
    fn detach(&mut self) {}
}

/// Audio that a device's callback pulls, at the device's own pace: a client's whole playout
/// (jitter buffer, decoder, drift-trimmed resampler) runs inside the callback, so no queue
/// sits between the jitter buffer and the device. Called on the audio thread: it must not
/// block, lock or allocate in its steady state.
pub trait Pull: Send {
    /// Fills `out` (interleaved, in the sink's format) with what plays next; `now` is the
    /// callback's time.
    fn pull(&mut self, out: &mut [f32], now: std::time::Instant);
    /// How many frames at the head of the last `out` were the stream's (the rest was silence:
    /// before it started, past its end, or nothing to play). A pump that writes to a file
    /// writes only those.
    fn frames(&self) -> usize;
}

/// The shortest device period asked for.
pub const MIN_DEVICE_PERIOD: Duration = Duration::from_micros(2_500);
/// The longest device period asked for packets of up to 10 ms.
pub const SHORT_DEVICE_PERIOD: Duration = Duration::from_millis(5);
/// The longest device period asked for at all (20 ms packets).
pub const MAX_DEVICE_PERIOD: Duration = Duration::from_millis(10);

/// The period to ask of a device for packets of `packet` audio: the packet's own length, within
/// 2.5-5 ms, and half the packet for packets longer than 10 ms (where the device lets us
/// choose). Every queue along the way is sized in periods:
/// ALSA's own buffer (two of them), what a capture callback holds back from a packet, what the
/// playout holds for the callback's pull.
///
/// Through PipeWire's ALSA plug-in on a 2-core VM (`bench/latency.py --route pipewire
/// --threads`), 5 ms packets on 2.5 ms periods cost 4.2-5.0 % of a core on the server and
/// 4.6-5.3 % on the client, most of it in the device threads; on 5 ms periods, 3.0-3.3 % and
/// 3.5-3.7 %, for the same callback-to-callback latency (10.9-12.9 ms against 11.7-11.8) but
/// 6 ms more in the devices' own buffers. The low-latency preset's 2 ms packets keep 2.5 ms
/// periods (callback to callback 8.0-8.8 ms); 1.33 ms made the plug-in drop audio.
///
/// PipeWire rounds a stream's period down to a power of two for its graph's quantum: 240-frame
/// periods run it at 128 frames (the plug-in's thread wakes 383 times a second, twice a
/// period). Periods of 256 frames halve that, but beat against 240-frame packets (Opus has no
/// 256-frame frame): callback to callback rose to 20.6 ms, for 0.5 % less CPU on the client and
/// a busier capture side. Measured and not taken.
/// Packets of 20 ms (the Opus preset for the least CPU) get 10 ms periods: a packet leaves
/// every 20 ms whatever the period, and the 5 ms ones woke each side's two device threads 300
/// and 360 times a second through PipeWire's plug-in for nothing. On 10 ms periods (PipeWire
/// runs its graph at 256 frames) they wake 160-190 times, as trx's do. Measured in
/// `bench/latency.py --route pipewire --threads`, see the commit that made it.
pub fn device_period(packet: Duration) -> Duration {
    packet
        .clamp(MIN_DEVICE_PERIOD, SHORT_DEVICE_PERIOD)
        .max((packet / 2).min(MAX_DEVICE_PERIOD))
}

/// Opens the source a server captures from, asking a device (reached through `host`) for
/// callbacks of `period`.
///
/// # Errors
/// [`AudioError`] when the device or file cannot be found or opened.
pub fn open_source(
    host: AudioHost,
    spec: &DeviceSpec,
    kind: DeviceKind,
    want: Option<StreamFormat>,
    period: Duration,
) -> Result<Box<dyn Source>, AudioError> {
    match spec {
        DeviceSpec::Wav(path) => Ok(Box::new(wav::WavSource::open(path)?)),
        DeviceSpec::Tone(hz) => Ok(Box::new(paced::ToneSource::new(*hz))),
        DeviceSpec::Null => Ok(Box::new(paced::NullSource)),
        _ => cpal_backend::open_source(host, spec, kind, want, period),
    }
}

/// Opens the sink a client plays on, as near to `stream` as the device allows; `device_rate`
/// asks for a device rate other than the stream's (the client then resamples); a device
/// (reached through `host`) is asked for callbacks of `period`.
///
/// # Errors
/// [`AudioError`] when the device or file cannot be found or opened.
pub fn open_sink(
    host: AudioHost,
    spec: &DeviceSpec,
    stream: StreamFormat,
    device_rate: Option<u32>,
    period: Duration,
) -> Result<Box<dyn Sink>, AudioError> {
    match spec {
        DeviceSpec::Wav(path) => Ok(Box::new(wav::WavSink::create(path, stream)?)),
        DeviceSpec::Null => Ok(Box::new(paced::NullSink { format: stream })),
        DeviceSpec::Tone(_) => Err(AudioError::BadSpec(
            "tone: is a source; a client plays on a device or wav:PATH".into(),
        )),
        _ => cpal_backend::open_sink(
            host,
            spec,
            StreamFormat {
                sample_rate: device_rate.unwrap_or(stream.sample_rate),
                ..stream
            },
            period,
        ),
    }
}

#[cfg(test)]
mod tests;
