//! What travels in an audio datagram, and back to samples: 16-bit PCM, or Opus (libopus, the
//! reference implementation, through the `opus` binding). Decoding happens in sequence order at
//! playout time, because an Opus decoder's state follows the stream: a lost packet is then
//! recovered from the next packet's forward error correction when it carries one, or concealed
//! by Opus's own packet-loss concealment; PCM losses fade ([`PcmConcealer`]).

use super::conceal::PcmConcealer;
use super::AudioError;
use crate::protocol::frame::{Codec, SessionParams};

/// Opus frame sizes at 48 kHz, in frames: 2.5, 5, 10 and 20 ms.
pub const OPUS_FRAMES_48K: [u32; 4] = [120, 240, 480, 960];
/// Sample rates Opus codes natively.
pub const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

fn opus_err(what: &str) -> impl FnOnce(opus::Error) -> AudioError + '_ {
    move |e| AudioError::Format(format!("opus {what}: {e}"))
}

fn opus_channels(channels: usize) -> opus::Channels {
    if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    }
}

pub use crate::protocol::frame::opus_frame_ok;

/// Turns received packets into PCM and stands in for lost ones.
#[derive(Debug)]
pub enum Decoder {
    /// PCM: the bytes are the samples.
    Pcm {
        /// Fades for losses.
        conceal: PcmConcealer,
    },
    /// Opus.
    Opus {
        /// libopus's decoder.
        dec: Box<opus::Decoder>,
        /// Interleaved samples per frame.
        frame_samples: usize,
        /// Channels.
        channels: usize,
    },
}

impl Decoder {
    /// The decoder a session's parameters call for.
    ///
    /// # Errors
    /// [`AudioError::Format`] when libopus refuses the format.
    pub fn new(params: &SessionParams) -> Result<Self, AudioError> {
        let frame_samples = usize::from(params.frame_frames) * usize::from(params.channels);
        Ok(match params.codec {
            Codec::PcmS16 | Codec::PcmS16Redundant => Decoder::Pcm {
                conceal: PcmConcealer::new(frame_samples),
            },
            Codec::Opus => Decoder::Opus {
                dec: Box::new(
                    opus::Decoder::new(
                        params.sample_rate,
                        opus_channels(usize::from(params.channels)),
                    )
                    .map_err(opus_err("decoder"))?,
                ),
                frame_samples,
                channels: usize::from(params.channels),
            },
        })
    }

    /// A received packet's samples into `out`.
    ///
    /// # Errors
    /// [`AudioError::Format`] for a packet libopus cannot decode (the caller conceals instead).
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), AudioError> {
        match self {
            Decoder::Pcm { conceal } => {
                out.clear();
                out.extend(
                    payload
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
                conceal.played(out);
                Ok(())
            }
            Decoder::Opus {
                dec,
                frame_samples,
                channels,
            } => {
                out.clear();
                out.resize(*frame_samples, 0);
                let n = dec
                    .decode(payload, out, false)
                    .map_err(opus_err("decode"))?;
                out.truncate(n * *channels);
                Ok(())
            }
        }
    }

    /// One packet's worth of audio for a lost packet, into `out`. `next` is the following
    /// packet if it has arrived: Opus recovers the lost one from its forward error correction.
    /// Returns true when that recovery was used.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut Vec<i16>) -> bool {
        match self {
            Decoder::Pcm { conceal } => {
                conceal.conceal(out);
                false
            }
            Decoder::Opus {
                dec, frame_samples, ..
            } => {
                out.clear();
                out.resize(*frame_samples, 0);
                if let Some(next) = next {
                    // Only SILK and hybrid packets (TOC configurations 0-15) can carry
                    // recovery data; for a CELT packet libopus would fall back to concealment.
                    let has_fec = next.first().is_some_and(|toc| toc >> 3 < 16);
                    if dec.decode(next, out, true).is_ok() {
                        return has_fec;
                    }
                }
                // Packet-loss concealment: an empty packet asks libopus to extrapolate.
                if dec.decode(&[], out, false).is_err() {
                    out.fill(0);
                }
                false
            }
        }
    }
}

/// Encodes captured frames for the wire (Opus only; PCM needs no encoder).
pub struct OpusEncoder {
    enc: opus::Encoder,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpusEncoder")
    }
}

/// From this bitrate up, libopus codes a stream without FEC as CELT alone whatever it hears
/// (its mode thresholds: 64 kb/s for speech in mono, lower for stereo and music).
const CELT_KBPS: u32 = 64;

impl OpusEncoder {
    /// An encoder for `rate` and `channels`, at `bitrate_kbps`, for frames of `frame_frames`,
    /// with in-band forward error correction when `fec` (libopus uses it in the modes that allow
    /// it: SILK and hybrid, so at lower bitrates and frames of 10 ms or more; a high-bitrate
    /// CELT stream relies on concealment).
    ///
    /// Frames under 10 ms are CELT's alone (SILK codes 10 ms at least), and so is a stream
    /// without FEC at 64 kb/s or more (libopus switches to SILK or hybrid below that for
    /// speech, and for FEC), so for both the encoder is asked for CELT's low-delay mode: 2.5 ms
    /// of look-ahead instead of 6.5 ms. At 20 ms, 128 kb/s stereo the coding is the same:
    /// piano-like, noise and transient test signals decoded to within 0.1 dB of the default
    /// mode's band SNR, for the same CPU (libopus 1.3.1).
    ///
    /// # Errors
    /// [`AudioError::Format`] when libopus refuses a setting.
    pub fn new(
        rate: u32,
        channels: u16,
        bitrate_kbps: u32,
        fec: bool,
        frame_frames: usize,
    ) -> Result<Self, AudioError> {
        let celt_only =
            (frame_frames as u64) * 100 < u64::from(rate) || (!fec && bitrate_kbps >= CELT_KBPS);
        let mut enc = opus::Encoder::new(
            rate,
            opus_channels(usize::from(channels)),
            if celt_only {
                opus::Application::LowDelay
            } else {
                opus::Application::Audio
            },
        )
        .map_err(opus_err("encoder"))?;
        let bits = i32::try_from(bitrate_kbps.saturating_mul(1000)).unwrap_or(i32::MAX);
        enc.set_bitrate(opus::Bitrate::Bits(bits))
            .map_err(opus_err("bitrate"))?;
        enc.set_inband_fec(fec).map_err(opus_err("fec"))?;
        if fec {
            // Tells the encoder to spend bits on recovery data for this much loss, and to code
            // each frame without leaning on the one before (CELT's inter-frame prediction would
            // otherwise leave the frames after a loss quiet until it converges again).
            enc.set_packet_loss_perc(10).map_err(opus_err("loss"))?;
            enc.set_prediction_disabled(true)
                .map_err(opus_err("prediction"))?;
            if !celt_only {
                // With FEC asked for, libopus codes 10 and 20 ms frames at 128 kb/s stereo as
                // hybrid, SILK beside CELT (TOC configurations 14 and 15): both sides together
                // used 4.8 % of a core at 20 ms, against 2.6 % for CELT alone (a 2-core VM).
                tracing::info!(
                    "opus: in-band FEC at {} ms frames codes SILK beside CELT (2-3 times the CPU); fec = false keeps CELT alone",
                    frame_frames as u64 * 1000 / u64::from(rate.max(1))
                );
            }
        }
        Ok(Self {
            enc,
            out: vec![0; crate::protocol::frame::MAX_AUDIO_BYTES],
        })
    }

    /// The encoder's look-ahead (its own delay), in frames.
    ///
    /// # Errors
    /// [`AudioError::Format`] when libopus cannot say.
    pub fn lookahead_frames(&mut self) -> Result<usize, AudioError> {
        let n = self.enc.get_lookahead().map_err(opus_err("lookahead"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Encodes one full frame of interleaved samples.
    ///
    /// # Errors
    /// [`AudioError::Format`] when libopus fails (a wrong frame size).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8], AudioError> {
        let n = self
            .enc
            .encode(pcm, &mut self.out)
            .map_err(opus_err("encode"))?;
        Ok(&self.out[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Direction, SecurityMode};

    fn params(codec: Codec, frames: u16) -> SessionParams {
        SessionParams {
            direction: Direction::ServerToClient,
            codec,
            mode: SecurityMode::Plain,
            sample_rate: 48_000,
            channels: 2,
            frame_frames: frames,
            session_id: 1,
        }
    }

    fn tone(frame: usize, frames: usize) -> Vec<i16> {
        (0..frames)
            .flat_map(|i| {
                let n = frame * frames + i;
                let v = (std::f64::consts::TAU * 440.0 * n as f64 / 48_000.0).sin() * 12_000.0;
                [v as i16, v as i16]
            })
            .collect()
    }

    #[test]
    fn frames_under_10_ms_or_without_fec_get_celts_low_delay() {
        let lookahead = |frames: usize, fec: bool| {
            OpusEncoder::new(48_000, 2, 128, fec, frames)
                .and_then(|mut e| e.lookahead_frames())
                .expect("encoder")
        };
        // libopus's own figures: 2.5 ms for CELT's low-delay mode, 6.5 ms otherwise.
        assert_eq!(lookahead(240, true), 120, "5 ms frames");
        assert_eq!(lookahead(120, true), 120, "2.5 ms frames");
        assert_eq!(lookahead(480, true), 312, "10 ms frames with FEC");
        assert_eq!(lookahead(960, true), 312, "20 ms frames with FEC");
        assert_eq!(lookahead(480, false), 120, "10 ms frames, no FEC");
        assert_eq!(lookahead(960, false), 120, "20 ms frames, no FEC");
        let speech = OpusEncoder::new(48_000, 2, 32, false, 960)
            .and_then(|mut e| e.lookahead_frames())
            .expect("encoder");
        assert_eq!(speech, 312, "32 kb/s keeps SILK for speech");
        // A 5 ms low-delay stream still round-trips.
        let mut enc = OpusEncoder::new(48_000, 2, 128, true, 240).expect("encoder");
        let mut dec = Decoder::new(&params(Codec::Opus, 240)).expect("decoder");
        let mut out = Vec::new();
        let mut energy = 0.0f64;
        for f in 0..50 {
            let packet = enc.encode(&tone(f, 240)).expect("encode").to_vec();
            dec.decode(&packet, &mut out).expect("decode");
            assert_eq!(out.len(), 480);
            if f >= 10 {
                energy += out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
            }
        }
        let rms = (energy / (40.0 * 480.0)).sqrt();
        assert!(
            (6_000.0..10_000.0).contains(&rms),
            "the tone's level: rms {rms:.0}"
        );
    }

    #[test]
    fn frame_sizes_are_opus_frame_sizes() {
        assert!(opus_frame_ok(48_000, 120) && opus_frame_ok(48_000, 960));
        assert!(opus_frame_ok(16_000, 80), "5 ms at 16 kHz");
        assert!(!opus_frame_ok(48_000, 155) && !opus_frame_ok(44_100, 441));
    }

    #[test]
    fn opus_round_trip_keeps_the_tone_and_conceals_losses_smoothly() {
        let mut enc = OpusEncoder::new(48_000, 2, 128, true, 480).expect("encoder");
        let mut dec = Decoder::new(&params(Codec::Opus, 480)).expect("decoder");
        let mut out = Vec::new();
        let mut decoded = Vec::new();
        let mut sent = Vec::new();
        for f in 0..100 {
            let pcm = tone(f, 480);
            sent.extend_from_slice(&pcm);
            let packet = enc.encode(&pcm).expect("encode").to_vec();
            assert!(packet.len() < 1240);
            if f == 60 {
                // Lost: concealed by libopus.
                assert!(!dec.conceal(None, &mut out));
            } else {
                dec.decode(&packet, &mut out).expect("decode");
            }
            assert_eq!(out.len(), 960);
            decoded.extend_from_slice(&out);
        }
        // The codec's delay is found by search around libopus's 6.5 ms lookahead (within one
        // period of the tone, so the search cannot lock onto a later cycle).
        let snr_at = |delay: usize| {
            let (mut sig, mut err) = (0.0f64, 0.0f64);
            for (i, &d) in decoded
                .iter()
                .enumerate()
                .skip(2 * delay + 9_600)
                .take(38_000)
            {
                let want = f64::from(sent[i - 2 * delay]);
                sig += want * want;
                err += (f64::from(d) - want).powi(2);
            }
            10.0 * (sig / err).log10()
        };
        let (snr, delay) = (260..380)
            .map(|d| (snr_at(d), d))
            .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a });
        eprintln!("opus delay {delay} frames, SNR {snr:.1} dB");
        assert!(snr > 20.0, "SNR {snr:.1} dB before the loss");
        // Around the lost frame: no click (no jump bigger than the tone's own steepest step).
        let around = &decoded[2 * (59 * 480)..2 * (63 * 480)];
        let max_step = around
            .chunks_exact(2)
            .map(|c| c[0])
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0);
        assert!(max_step < 1_500, "step {max_step}: a click");
    }
}
