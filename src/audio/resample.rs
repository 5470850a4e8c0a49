//! Sample-rate conversion between the stream and the playback device (rubato, sinc interpolation).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use super::AudioError;

/// Converts interleaved f32 audio from one rate to another; a no-op when the rates match.
pub struct RateConverter {
    channels: usize,
    inner: Option<Async<f32>>,
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl std::fmt::Debug for RateConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RateConverter {{ channels: {}, active: {} }}",
            self.channels,
            self.inner.is_some()
        )
    }
}

impl RateConverter {
    /// A converter for `channels` channels, fed `chunk_frames` frames at a time.
    ///
    /// # Errors
    /// [`AudioError::Format`] when rubato rejects the ratio.
    pub fn new(
        from_rate: u32,
        to_rate: u32,
        channels: usize,
        chunk_frames: usize,
    ) -> Result<Self, AudioError> {
        let inner = if from_rate == to_rate {
            None
        } else {
            let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
                .oversampling_factor(128)
                .interpolation(SincInterpolationType::Linear);
            let ratio = f64::from(to_rate) / f64::from(from_rate);
            Some(
                Async::<f32>::new_sinc(
                    ratio,
                    1.1,
                    &params,
                    chunk_frames,
                    channels,
                    FixedAsync::Input,
                )
                .map_err(|e| {
                    AudioError::Format(format!("resampler {from_rate} -> {to_rate} Hz: {e}"))
                })?,
            )
        };
        let out_len = inner
            .as_ref()
            .map_or(0, |r| r.output_frames_max() * channels);
        Ok(Self {
            channels,
            inner,
            pending: Vec::with_capacity(chunk_frames * channels * 4),
            out: vec![0.0; out_len],
        })
    }

    /// Frames of delay the converter adds.
    pub fn delay_frames(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Feeds `input`, appending whatever output is ready to `output`.
    ///
    /// # Errors
    /// [`AudioError::Format`] if rubato fails (it does not for correctly sized buffers).
    pub fn process(&mut self, input: &[f32], output: &mut Vec<f32>) -> Result<(), AudioError> {
        let Some(r) = self.inner.as_mut() else {
            output.extend_from_slice(input);
            return Ok(());
        };
        let ch = self.channels;
        self.pending.extend_from_slice(input);
        let err = |e: &dyn std::fmt::Display| AudioError::Format(format!("resampler: {e}"));
        while self.pending.len() / ch >= r.input_frames_next() {
            let frames_in = self.pending.len() / ch;
            let inp = InterleavedSlice::new(&self.pending[..frames_in * ch], ch, frames_in)
                .map_err(|e| err(&e))?;
            let frames_out = self.out.len() / ch;
            let mut outp = InterleavedSlice::new_mut(&mut self.out[..], ch, frames_out)
                .map_err(|e| err(&e))?;
            let (n_in, n_out) = r
                .process_into_buffer(&inp, &mut outp, None)
                .map_err(|e| err(&e))?;
            output.extend_from_slice(&self.out[..n_out * ch]);
            self.pending.drain(..n_in * ch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frequency of a sine by counting zero crossings.
    fn frequency(samples: &[f32], rate: f32) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        crossings as f32 * rate / samples.len() as f32
    }

    #[test]
    fn keeps_pitch_from_48k_to_44k1() {
        let mut rc = RateConverter::new(48_000, 44_100, 1, 240).expect("valid ratio");
        let input: Vec<f32> = (0..48_000)
            .map(|i| (std::f32::consts::TAU * 1000.0 * i as f32 / 48_000.0).sin() * 0.5)
            .collect();
        let mut out = Vec::new();
        for chunk in input.chunks(240) {
            rc.process(chunk, &mut out).expect("resample");
        }
        let n = out.len() as f32;
        assert!((n - 44_100.0).abs() < 500.0, "{n} frames out");
        let f = frequency(&out[2000..], 44_100.0);
        assert!((f - 1000.0).abs() < 5.0, "pitch {f} Hz");
    }

    #[test]
    fn same_rate_passes_through() {
        let mut rc = RateConverter::new(48_000, 48_000, 2, 240).expect("valid");
        let mut out = Vec::new();
        rc.process(&[0.25, -0.25], &mut out).expect("pass-through");
        assert_eq!(out, [0.25, -0.25]);
    }
}
