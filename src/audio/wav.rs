//! WAV files: a server streams one in real time; a client records what arrives.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::convert::f32_to_i16;
use super::paced::Generator;
use super::{AudioError, Capture, Sink, Source, StreamFormat};

/// A WAV file streamed from disk at its own rate (at most 2 channels). Only the samples due are
/// read, so a file of any length costs the same memory.
pub struct WavSource {
    path: PathBuf,
    format: StreamFormat,
    reader: hound::WavReader<std::io::BufReader<File>>,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WavSource {{ path: {:?}, format: {:?} }}",
            self.path, self.format
        )
    }
}

fn wav_err(path: &Path) -> impl FnOnce(hound::Error) -> AudioError + '_ {
    move |source| AudioError::Wav {
        path: path.to_owned(),
        source,
    }
}

/// How a file's samples become i16.
#[derive(Clone, Copy)]
enum Decode {
    I16,
    /// Wider integers, shifted down by this many bits.
    Int(u16),
    F32,
}

impl WavSource {
    /// Opens the file and checks its format (16-bit, 24-bit, 32-bit integer or float PCM).
    ///
    /// # Errors
    /// [`AudioError::Wav`] when the file is missing or malformed; [`AudioError::Format`] for
    /// more than two channels or an unsupported sample format.
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
        decoder(spec).ok_or_else(|| {
            AudioError::Format(format!(
                "{}: {}-bit {:?}",
                path.display(),
                spec.bits_per_sample,
                spec.sample_format
            ))
        })?;
        Ok(Self {
            path: path.to_owned(),
            format: StreamFormat {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
            },
            reader,
        })
    }
}

fn decoder(spec: hound::WavSpec) -> Option<Decode> {
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => Some(Decode::I16),
        (hound::SampleFormat::Int, bits @ 17..=32) => Some(Decode::Int(bits - 16)),
        (hound::SampleFormat::Float, 32) => Some(Decode::F32),
        _ => None,
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
        let format = self.format;
        let mut reader = self.reader;
        let decode = decoder(reader.spec()).unwrap_or(Decode::I16);
        let path = self.path;
        if let Decode::I16 = decode {
            return Ok(Capture::paced(format, s16_bulk_reader(reader, path)));
        }
        let gen: Generator = Box::new(move |buf: &mut [i16]| {
            // A read error mid-file ends the stream where it broke; it is logged, not hidden.
            let mut n = 0;
            let result: Result<(), hound::Error> = (|| {
                match decode {
                    Decode::I16 => {
                        for (dst, s) in buf.iter_mut().zip(reader.samples::<i16>()) {
                            *dst = s?;
                            n += 1;
                        }
                    }
                    Decode::Int(shift) => {
                        for (dst, s) in buf.iter_mut().zip(reader.samples::<i32>()) {
                            *dst = (s? >> shift) as i16;
                            n += 1;
                        }
                    }
                    Decode::F32 => {
                        for (dst, s) in buf.iter_mut().zip(reader.samples::<f32>()) {
                            *dst = f32_to_i16(s?);
                            n += 1;
                        }
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                tracing::error!("{}: {e}; ending the stream here", path.display());
            }
            n
        });
        Ok(Capture::paced(format, gen))
    }
}

/// 16-bit PCM, the common case, read straight from the data chunk in blocks: hound's
/// per-sample iterator was half the server's instructions.
fn s16_bulk_reader(reader: hound::WavReader<std::io::BufReader<File>>, path: PathBuf) -> Generator {
    use std::io::Read;
    let mut left = reader.len() as usize;
    let mut data = reader.into_inner();
    let mut bytes = Vec::new();
    Box::new(move |buf: &mut [i16]| {
        let n = buf.len().min(left);
        bytes.resize(n * 2, 0);
        if let Err(e) = data.read_exact(&mut bytes) {
            tracing::error!("{}: {e}; ending the stream here", path.display());
            left = 0;
            return 0;
        }
        for (dst, b) in buf.iter_mut().zip(bytes.chunks_exact(2)) {
            *dst = i16::from_le_bytes([b[0], b[1]]);
        }
        left -= n;
        n
    })
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
