//! Sources that generate samples on a thread paced by the wall clock (files, tones, silence), and
//! the null sink. Pacing keeps them honest: a file streams in real time, like a microphone.

use std::f32::consts::TAU;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{AudioError, Capture, Sink, Source, StreamFormat};

/// How often a paced source wakes to push what is due.
const TICK: Duration = Duration::from_millis(2);
/// Seconds of audio the ring holds.
const RING_SECONDS: f32 = 0.5;

/// Fills `buf` (interleaved) with the next samples; returns how many it wrote. Fewer than asked
/// means the source has ended.
pub type Generator = Box<dyn FnMut(&mut [i16]) -> usize + Send>;

struct StopOnDrop {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `gen` on a thread that pushes samples into a ring at `format`'s real-time rate.
///
/// # Errors
/// [`AudioError::Backend`] if the thread cannot be spawned.
pub fn spawn_paced(
    format: StreamFormat,
    name: &str,
    mut gen: Generator,
) -> Result<Capture, AudioError> {
    let ch = usize::from(format.channels);
    let cap = ((format.sample_rate as f32 * RING_SECONDS) as usize).max(1024) * ch;
    let (mut producer, consumer) = rtrb::RingBuffer::<i16>::new(cap);
    let stop = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicBool::new(false));
    let overruns = Arc::new(AtomicU64::new(0));
    let (stop2, ended2, over2) = (stop.clone(), ended.clone(), overruns.clone());
    let rate = u64::from(format.sample_rate);
    let thread = thread::Builder::new()
        .name(format!("source {name}"))
        .spawn(move || {
            let start = Instant::now();
            let mut produced: u64 = 0;
            let mut buf = vec![0i16; (rate as usize / 50).max(1) * ch];
            while !stop2.load(Ordering::Relaxed) {
                let due = start.elapsed().as_micros() as u64 * rate / 1_000_000;
                while produced < due {
                    let frames = ((due - produced) as usize).min(buf.len() / ch);
                    let n = gen(&mut buf[..frames * ch]);
                    let n_frames = n / ch;
                    for &s in &buf[..n_frames * ch] {
                        if producer.push(s).is_err() {
                            over2.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    produced += n_frames as u64;
                    if n < frames * ch {
                        ended2.store(true, Ordering::Release);
                        return;
                    }
                }
                thread::sleep(TICK);
            }
        })
        .map_err(|e| AudioError::Backend {
            device: name.to_owned(),
            message: e.to_string(),
        })?;
    Ok(Capture {
        ring: consumer,
        format,
        ended,
        overruns,
        guard: Box::new(StopOnDrop {
            stop,
            thread: Some(thread),
        }),
    })
}

/// A sine wave at a fixed frequency, 48 kHz stereo, at -6 dBFS.
#[derive(Debug)]
pub struct ToneSource {
    hz: f32,
}

impl ToneSource {
    /// A tone at `hz`.
    pub fn new(hz: f32) -> Self {
        Self { hz }
    }
}

impl Source for ToneSource {
    fn format(&self) -> StreamFormat {
        StreamFormat {
            sample_rate: 48_000,
            channels: 2,
        }
    }

    fn describe(&self) -> String {
        format!("tone:{}", self.hz)
    }

    fn start(self: Box<Self>) -> Result<Capture, AudioError> {
        let format = self.format();
        let step = self.hz / format.sample_rate as f32;
        let mut phase = 0.0f32;
        let gen: Generator = Box::new(move |buf: &mut [i16]| {
            for frame in buf.chunks_exact_mut(2) {
                let v = super::convert::f32_to_i16(0.5 * (TAU * phase).sin());
                frame.fill(v);
                phase = (phase + step).fract();
            }
            buf.len()
        });
        spawn_paced(format, &self.describe(), gen)
    }
}

/// Silence, 48 kHz stereo, forever.
#[derive(Debug)]
pub struct NullSource;

impl Source for NullSource {
    fn format(&self) -> StreamFormat {
        StreamFormat {
            sample_rate: 48_000,
            channels: 2,
        }
    }

    fn describe(&self) -> String {
        "null".to_owned()
    }

    fn start(self: Box<Self>) -> Result<Capture, AudioError> {
        spawn_paced(
            self.format(),
            "null",
            Box::new(|buf: &mut [i16]| {
                buf.fill(0);
                buf.len()
            }),
        )
    }
}

/// Discards what it is given.
#[derive(Debug)]
pub struct NullSink {
    /// The stream's format.
    pub format: StreamFormat,
}

impl Sink for NullSink {
    fn format(&self) -> StreamFormat {
        self.format
    }
    fn describe(&self) -> String {
        "null".to_owned()
    }
    fn clocked(&self) -> bool {
        false
    }
    fn queued_frames(&self) -> usize {
        0
    }
    fn low_water_frames(&self) -> usize {
        0
    }
    fn write(&mut self, samples: &[f32]) -> Result<usize, AudioError> {
        Ok(samples.len() / usize::from(self.format.channels.max(1)))
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}
