//! Sources that generate samples when pulled on the capture clock (tones, silence; files in
//! `wav`), and the null sink. Pacing keeps them honest: a file streams in real time, like a
//! microphone.

use std::f32::consts::TAU;

use super::{AudioError, Capture, Sink, Source, StreamFormat};

/// Fills `buf` (interleaved) with the next samples; returns how many it wrote. Fewer than asked
/// means the source has ended.
pub type Generator = Box<dyn FnMut(&mut [i16]) -> usize + Send>;

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
        Ok(Capture::paced(format, gen))
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
        Ok(Capture::paced(
            self.format(),
            Box::new(|buf: &mut [i16]| {
                buf.fill(0);
                buf.len()
            }),
        ))
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
    fn write(&mut self, samples: &[f32]) -> Result<usize, AudioError> {
        Ok(samples.len() / usize::from(self.format.channels.max(1)))
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}
