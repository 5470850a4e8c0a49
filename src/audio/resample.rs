//! Sample-rate conversion between the stream and the playback device (rubato, sinc interpolation).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, PolynomialDegree, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use super::AudioError;

/// How an adjustable converter interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// An 8-point (septic) polynomial: cheap; clean for ratios near 1.
    Polynomial,
    /// A 128-tap windowed sinc: for real rate conversion.
    Sinc,
}

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

    /// A converter whose ratio can be trimmed while it runs ([`RateConverter::set_correction`]),
    /// for clock-drift correction: active even when the rates match.
    ///
    /// # Errors
    /// [`AudioError::Format`] when rubato rejects the ratio.
    pub fn adjustable(
        from_rate: u32,
        to_rate: u32,
        channels: usize,
        chunk_frames: usize,
    ) -> Result<Self, AudioError> {
        // The sinc costs 12.5 µs per 5 ms stereo packet against the polynomial's 7.7 µs
        // (`cargo bench --bench protocol -- drift`) and is 15 dB cleaner at 9 kHz.
        Self::adjustable_with(
            from_rate,
            to_rate,
            channels,
            chunk_frames,
            Interpolation::Sinc,
        )
    }

    /// As [`RateConverter::adjustable`], with the interpolation chosen (for benchmarks and
    /// tests).
    ///
    /// # Errors
    /// [`AudioError::Format`] when rubato rejects the ratio.
    pub fn adjustable_with(
        from_rate: u32,
        to_rate: u32,
        channels: usize,
        chunk_frames: usize,
        kind: Interpolation,
    ) -> Result<Self, AudioError> {
        let ratio = f64::from(to_rate) / f64::from(from_rate);
        let max_relative = 1.0 + 2.0 * crate::audio::adapt::MAX_CORRECTION;
        let built = if kind == Interpolation::Polynomial {
            Async::<f32>::new_poly(
                ratio,
                max_relative,
                PolynomialDegree::Septic,
                chunk_frames,
                channels,
                FixedAsync::Input,
            )
        } else {
            let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
                .oversampling_factor(128)
                .interpolation(SincInterpolationType::Linear);
            Async::<f32>::new_sinc(
                ratio,
                max_relative,
                &params,
                chunk_frames,
                channels,
                FixedAsync::Input,
            )
        };
        let inner = built.map_err(|e| {
            AudioError::Format(format!("resampler {from_rate} -> {to_rate} Hz: {e}"))
        })?;
        let out_len = inner.output_frames_max() * channels;
        Ok(Self {
            channels,
            inner: Some(inner),
            pending: Vec::with_capacity(chunk_frames * channels * 4),
            out: vec![0.0; out_len],
        })
    }

    /// Trims the ratio by `relative` (1.0: nominal; above 1 makes more output per input). The
    /// change is ramped across the next chunk, so it never clicks. A pass-through converter
    /// ignores it.
    pub fn set_correction(&mut self, relative: f64) {
        if let Some(r) = self.inner.as_mut() {
            let _ = r.set_resample_ratio_relative(relative, true);
        }
    }

    /// Input frames held, waiting for a full chunk.
    pub fn pending_frames(&self) -> usize {
        self.pending.len() / self.channels.max(1)
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

    /// Drift correction must not be heard: a 1 kHz + 9 kHz pair through the adjustable
    /// converter at +300 ppm, compared with the exact resampled signal, leaves its error more
    /// than 70 dB down.
    #[test]
    fn drift_correction_is_clean() {
        // The polynomial (what same-rate streams use) is 8 points: its error rises with
        // frequency, about 57 dB down at 9 kHz (and far lower at 1 kHz); the sinc is cleaner.
        assert!(drift_snr(Interpolation::Polynomial) > 55.0);
        assert!(drift_snr(Interpolation::Sinc) > 70.0);
    }

    fn drift_snr(kind: Interpolation) -> f64 {
        let rate = 48_000.0f64;
        let rel = 1.0003;
        let mut rc = RateConverter::adjustable_with(48_000, 48_000, 1, 240, kind).expect("valid");
        rc.set_correction(rel);
        let signal = |t: f64| {
            0.4 * (std::f64::consts::TAU * 1000.0 * t).sin()
                + 0.4 * (std::f64::consts::TAU * 9000.0 * t).sin()
        };
        let input: Vec<f32> = (0..96_000)
            .map(|i| signal(f64::from(i) / rate) as f32)
            .collect();
        let mut out = Vec::new();
        for chunk in input.chunks(240) {
            rc.process(chunk, &mut out).expect("resample");
        }
        // Output frame k sits at input time (k - delay) / (rate * rel); the delay is found by
        // search (over 0..16 frames in 1/100 steps, then in 1/5000 steps around the best).
        let snr_at = |delay: f64| {
            let (mut err, mut sig) = (0.0f64, 0.0f64);
            for (k, &y) in out.iter().enumerate().skip(4_800).take(40_000) {
                let want = signal((k as f64 - delay) / (rate * rel));
                err += (f64::from(y) - want).powi(2);
                sig += want.powi(2);
            }
            10.0 * (sig / err).log10()
        };
        let best = |from: f64, step: f64, n: u32| {
            (0..n)
                .map(|i| from + f64::from(i) * step)
                .map(|d| (snr_at(d), d))
                .fold((f64::MIN, 0.0), |a, b| if b.0 > a.0 { b } else { a })
        };
        let (_, coarse) = best(0.0, 0.01, 1600);
        let (snr, _) = best(coarse - 0.01, 0.0002, 100);
        let n = out.len() as f64;
        assert!((n / 96_000.0 - rel).abs() < 0.0002, "{n} frames out");
        eprintln!("{kind:?}: SNR {snr:.1} dB");
        snr
    }

    #[test]
    fn same_rate_passes_through() {
        let mut rc = RateConverter::new(48_000, 48_000, 2, 240).expect("valid");
        let mut out = Vec::new();
        rc.process(&[0.25, -0.25], &mut out).expect("pass-through");
        assert_eq!(out, [0.25, -0.25]);
    }
}
