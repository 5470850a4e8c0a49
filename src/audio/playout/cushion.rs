//! What a device takes at once, learned: the cushion the playout holds beyond the jitter
//! buffer's target so that a callback never finds it short.

use std::time::{Duration, Instant};

/// The largest amount a device consumed between two services of its feeder, held for
/// [`BURST_HOLD`] and then released at 0.5 ms a second, as the latency tuner releases its
/// target (drift correction follows that with a lag of a millisecond or two). A device whose
/// callbacks come in bursts (the ALSA pulse plug-in at 44.1 kHz asks for several periods at
/// once) needs that much queued beyond the jitter buffer's target, or it underruns; one that
/// calls back evenly needs one callback and the feeder's own lateness, which this measures too.
#[derive(Debug, Clone, Copy)]
pub(super) struct BurstPeak {
    pub(super) frames: usize,
    at: Option<Instant>,
    release_per_sec: f64,
    /// The largest gulp learned ([`MAX_GULP`]): a stall of the feeder itself (the machine
    /// busy elsewhere) is not the device's habit, and a deeper cushion would only add latency.
    cap: usize,
}

/// The most the device's cushion learns from one gulp.
const MAX_GULP: Duration = Duration::from_millis(20);
/// How long a burst keeps the device's cushion deep.
const BURST_HOLD: Duration = Duration::from_secs(10);

impl BurstPeak {
    /// Starts from what the device itself expects (`prior`). A larger gulp learned after
    /// playout has begun moves the set point up, and drift correction fills the difference at
    /// its 0.5 % limit: a second or two of slightly slow playout at the start, then steady.
    pub(super) fn new(prior: usize, rate: f64) -> Self {
        Self {
            frames: prior,
            at: None,
            release_per_sec: rate * 0.0005,
            cap: (rate * MAX_GULP.as_secs_f64()) as usize,
        }
    }

    pub(super) fn observe(&mut self, frames: usize, now: Instant) {
        let frames = frames.min(self.cap);
        if let Some(at) = self.at {
            let held = now.saturating_duration_since(at);
            if held > BURST_HOLD {
                // Release from the end of the hold, gradually.
                let over = (held - BURST_HOLD).as_secs_f64();
                let released = (over * self.release_per_sec) as usize;
                if released > 0 {
                    self.frames = self.frames.saturating_sub(released);
                    self.at = Some(now - BURST_HOLD);
                }
            }
        }
        if frames >= self.frames {
            self.frames = frames;
            self.at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gulp_is_held_then_released_and_never_learned_past_20_ms() {
        let t0 = Instant::now();
        let mut b = BurstPeak::new(0, 48_000.0);
        b.observe(240, t0);
        assert_eq!(b.frames, 240);
        // A 200 ms stall of the thread that pulls is not the device's habit.
        b.observe(9_600, t0 + Duration::from_millis(10));
        assert_eq!(b.frames, 960, "capped at 20 ms");
        b.observe(240, t0 + BURST_HOLD);
        assert_eq!(b.frames, 960, "held for {BURST_HOLD:?}");
        // Then released at 0.5 ms a second: 24 frames a second, 48 in 2 s.
        b.observe(240, t0 + BURST_HOLD + Duration::from_secs(2));
        assert!((908..=916).contains(&b.frames), "{}", b.frames);
    }
}
