//! From decoded packets to what the device takes: sample format, channels and rate (trimmed for
//! drift on a device), and the crossfade that hides a cut.

use crate::audio::convert::{i16_to_f32, map_channels};
use crate::audio::resample::{Interpolation, RateConverter};
use crate::audio::{AudioError, StreamFormat};
use std::time::Duration;

/// Below this floor, a playout asks for low latency: drift is trimmed with the short polynomial
/// (8 points, 0.1 ms of delay) rather than the 128-tap sinc (1.3 ms of delay, and 15 dB cleaner
/// at 9 kHz: 72 against 57 dB, `resample::tests`).
pub(super) const LOW_LATENCY_FLOOR: Duration = Duration::from_millis(5);

/// How a device's playout trims for drift: the polynomial for low latency when the rates match
/// (it only trims then); the sinc otherwise, and always for a real rate conversion.
pub(super) fn trim_interpolation(
    floor: Duration,
    stream_rate: u32,
    sink_rate: f64,
) -> Interpolation {
    if floor < LOW_LATENCY_FLOOR && f64::from(stream_rate) == sink_rate {
        Interpolation::Polynomial
    } else {
        Interpolation::Sinc
    }
}

pub(super) struct Converter {
    from: StreamFormat,
    to: StreamFormat,
    rate: RateConverter,
    f32_in: Vec<f32>,
    mapped: Vec<f32>,
    out: Vec<f32>,
}

impl Converter {
    /// `trim`: the rate can be trimmed for drift (a device), interpolating so; a file needs no
    /// trimming (`None`).
    pub(super) fn new(
        from: StreamFormat,
        to: StreamFormat,
        chunk: usize,
        trim: Option<Interpolation>,
    ) -> Result<Self, AudioError> {
        let (a, b, c) = (from.sample_rate, to.sample_rate, usize::from(to.channels));
        Ok(Self {
            from,
            to,
            rate: match trim {
                Some(kind) => RateConverter::adjustable_with(a, b, c, chunk, kind)?,
                None => RateConverter::new(a, b, c, chunk)?,
            },
            f32_in: Vec::with_capacity(chunk * usize::from(from.channels)),
            mapped: Vec::with_capacity(chunk * usize::from(to.channels)),
            out: Vec::with_capacity(chunk * usize::from(to.channels) * 8),
        })
    }

    pub(super) fn set_correction(&mut self, relative: f64) {
        self.rate.set_correction(relative);
    }

    /// Input frames waiting in the resampler.
    pub(super) fn pending_frames(&self) -> usize {
        self.rate.pending_frames()
    }

    /// The resampler's own delay, in output frames.
    pub(super) fn delay_frames(&self) -> usize {
        self.rate.delay_frames()
    }

    /// Converts to the sink's format and rate (what the resampler has ready; it holds a little).
    pub(super) fn convert(&mut self, pcm: &[i16]) -> Result<&[f32], AudioError> {
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
        Ok(&self.out)
    }
}

/// Fades `pcm` (interleaved, `ch` channels) in from `from` over their common length, frame by
/// frame, and empties `from`. Nothing when `from` is empty.
pub(super) fn crossfade(from: &mut Vec<i16>, pcm: &mut [i16], ch: usize) {
    let ch = ch.max(1);
    let frames = from.len().min(pcm.len()) / ch;
    for f in 0..frames {
        let w = (f + 1) as f32 / (frames + 1) as f32;
        for c in 0..ch {
            let i = f * ch + c;
            pcm[i] = (f32::from(from[i]) * (1.0 - w) + f32::from(pcm[i]) * w).round() as i16;
        }
    }
    from.clear();
}
