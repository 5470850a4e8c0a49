//! Sample conversion and channel mapping. Everything here works on caller-owned buffers.

/// i16 to f32 in [-1, 1).
#[inline]
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

/// f32 to i16 with rounding and clamping; exact inverse of [`i16_to_f32`].
#[inline]
pub fn f32_to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Decodes s16le bytes into f32 samples, appending to `out`.
pub fn s16le_to_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|b| i16_to_f32(i16::from_le_bytes([b[0], b[1]]))),
    );
}

/// Maps interleaved frames from `from` channels to `to` channels, appending to `out`:
/// mono is copied to every output channel, stereo to mono is averaged, otherwise channels are
/// taken in order and extra output channels get the first input channel.
pub fn map_channels(input: &[f32], from: usize, to: usize, out: &mut Vec<f32>) {
    if from == to {
        out.extend_from_slice(input);
        return;
    }
    for frame in input.chunks_exact(from) {
        if to == 1 {
            out.push(frame.iter().sum::<f32>() / from as f32);
        } else {
            for c in 0..to {
                out.push(frame.get(c).copied().unwrap_or(frame[0]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_round_trips_exactly() {
        for s in [i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX] {
            assert_eq!(f32_to_i16(i16_to_f32(s)), s);
        }
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
    }

    #[test]
    fn channels_map() {
        let mut out = Vec::new();
        map_channels(&[0.5, -0.5], 1, 2, &mut out);
        assert_eq!(out, [0.5, 0.5, -0.5, -0.5]);
        out.clear();
        map_channels(&[0.5, 0.25, 1.0, 0.0], 2, 1, &mut out);
        assert_eq!(out, [0.375, 0.5]);
    }
}
