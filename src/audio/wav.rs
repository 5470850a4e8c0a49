//! WAV files: a server streams one in real time; a client records what arrives.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::convert::f32_to_i16;
use super::paced::{spawn_paced, Generator};
use super::{AudioError, Capture, Sink, Source, StreamFormat};

/// A WAV file read into memory and streamed at its own rate (at most 2 channels).
#[derive(Debug)]
pub struct WavSource {
    path: PathBuf,
    format: StreamFormat,
    samples: Vec<i16>,
}

fn wav_err(path: &Path) -> impl FnOnce(hound::Error) -> AudioError + '_ {
    move |source| AudioError::Wav {
        path: path.to_owned(),
        source,
    }
}

impl WavSource {
    /// Reads the whole file (16-bit, 24-bit, 32-bit integer or float PCM).
    ///
    /// # Errors
    /// [`AudioError::Wav`] when the file is missing or malformed; [`AudioError::Format`] for
    /// more than two channels.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let reader = hound::WavReader::open(path).map_err(wav_err(path))?;
        let spec = reader.spec();
        if !(1..=2).contains(&spec.channels) {
            return Err(AudioError::Format(format!(
                "{}: {} channels (EchoWarp streams mono or stereo)",
                path.display(),
                spec.channels
            )));
        }
        let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => reader
                .into_samples::<i16>()
                .collect::<Result<_, _>>()
                .map_err(wav_err(path))?,
            (hound::SampleFormat::Int, bits) if bits > 16 => reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v >> (bits - 16)) as i16))
                .collect::<Result<_, _>>()
                .map_err(wav_err(path))?,
            (hound::SampleFormat::Float, 32) => reader
                .into_samples::<f32>()
                .map(|s| s.map(f32_to_i16))
                .collect::<Result<_, _>>()
                .map_err(wav_err(path))?,
            (fmt, bits) => {
                return Err(AudioError::Format(format!(
                    "{}: {bits}-bit {fmt:?}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path: path.to_owned(),
            format: StreamFormat {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
            },
            samples,
        })
    }
}

impl Source for WavSource {
    fn format(&self) -> StreamFormat {
        self.format
    }

    fn describe(&self) -> String {
        format!("wav:{}", self.path.display())
    }

    fn start(self: Box<Self>) -> Result<Capture, AudioError> {
        let name = self.describe();
        let format = self.format;
        let samples = self.samples;
        let mut at = 0usize;
        let gen: Generator = Box::new(move |buf: &mut [i16]| {
            let n = buf.len().min(samples.len() - at);
            buf[..n].copy_from_slice(&samples[at..at + n]);
            at += n;
            n
        });
        spawn_paced(format, &name, gen)
    }
}

/// Records 16-bit PCM at the stream's rate and channels. The header is written on `finish` (and,
/// as a last resort, on drop), so a recording stopped by Ctrl-C is a valid file.
pub struct WavSink {
    path: PathBuf,
    format: StreamFormat,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WavSink {{ path: {:?}, format: {:?} }}",
            self.path, self.format
        )
    }
}

impl WavSink {
    /// Creates (or truncates) the file.
    ///
    /// # Errors
    /// [`AudioError::Wav`] when the file cannot be created.
    pub fn create(path: &Path, format: StreamFormat) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: format.channels,
            sample_rate: format.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(wav_err(path))?;
        Ok(Self {
            path: path.to_owned(),
            format,
            writer: Some(writer),
        })
    }
}

impl Sink for WavSink {
    fn format(&self) -> StreamFormat {
        self.format
    }
    fn describe(&self) -> String {
        format!("wav:{}", self.path.display())
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
        let path = self.path.clone();
        if let Some(w) = self.writer.as_mut() {
            for &s in samples {
                w.write_sample(f32_to_i16(s)).map_err(wav_err(&path))?;
            }
        }
        Ok(samples.len() / usize::from(self.format.channels))
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(wav_err(&self.path)),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("could not finalise {}: {e}", self.path.display());
        }
    }
}
