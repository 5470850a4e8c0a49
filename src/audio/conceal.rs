//! Loss concealment for PCM: a lost packet becomes the last good one fading to silence over one
//! packet (then silence), and the audio fades back in over a quarter packet when packets return.
//! No step in the waveform either way, so no click; no repeated buzz on a long gap.

/// Remembers the last good packet and how many have been concealed since.
#[derive(Debug, Clone)]
pub struct PcmConcealer {
    last: Vec<i16>,
    run: u32,
}

impl PcmConcealer {
    /// A concealer for packets of `frame_samples` interleaved samples.
    pub fn new(frame_samples: usize) -> Self {
        Self {
            last: vec![0; frame_samples],
            run: 0,
        }
    }

    /// Packets concealed in a row so far.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// A received packet is about to play: fades it in after a concealment, and remembers it.
    pub fn played(&mut self, pcm: &mut [i16]) {
        if self.run > 0 {
            // Back from a concealment (which faded to silence): fade in over the first quarter
            // of the packet (1.25 ms at 5 ms packets), enough for no step.
            let n = (pcm.len() / 4).max(1);
            for (i, s) in pcm.iter_mut().take(n).enumerate() {
                *s = (f32::from(*s) * (i as f32 / n as f32)) as i16;
            }
        }
        self.run = 0;
        if pcm.len() == self.last.len() {
            self.last.copy_from_slice(pcm);
        }
    }

    /// Writes one packet of concealment into `out`.
    pub fn conceal(&mut self, out: &mut Vec<i16>) {
        out.clear();
        if self.run == 0 {
            let n = self.last.len().max(1) as f32;
            out.extend(
                self.last
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (f32::from(s) * (1.0 - i as f32 / n)) as i16),
            );
        } else {
            out.resize(self.last.len(), 0);
        }
        self.run += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fades_out_then_silence_then_fades_back_in() {
        let mut c = PcmConcealer::new(4);
        let mut pcm = vec![16384; 4];
        c.played(&mut pcm);
        assert_eq!(pcm, [16384; 4], "a normal packet is untouched");
        let mut out = Vec::new();
        c.conceal(&mut out);
        assert_eq!(
            out,
            [16384, 12288, 8192, 4096],
            "fades out, no step to silence"
        );
        c.conceal(&mut out);
        assert_eq!(out, [0; 4], "then silence, not a buzz");
        assert_eq!(c.run(), 2);
        let mut back = vec![16384; 4];
        c.played(&mut back);
        assert_eq!(back, [0, 16384, 16384, 16384], "fades in from the silence");
        let mut next = vec![16384; 4];
        c.played(&mut next);
        assert_eq!(next, [16384; 4]);
    }
}
