//! The two feedback loops that keep a client's playout steady, sans-IO (every call takes `now`,
//! so tests run them through simulated hours):
//!
//! - [`LatencyTuner`] watches packet arrivals and decides how much audio to hold: enough to
//!   cover the recent worst lateness, never below the profile's `target_latency_ms`. It grows at
//!   once when packets come late and shrinks slowly, after the network has been calm for a while.
//!   A step in transit time (every packet from some point on that much later) is not lateness:
//!   it is dropped as soon as the packets after it show it.
//! - [`DriftControl`] holds the buffered depth at that target while the sender's clock runs fast
//!   or slow against the playback device's: a PI controller on the smoothed depth error sets the
//!   resampler's relative ratio, so the correction is a pitch change of a few hundred ppm at
//!   most (inaudible), never a dropped or repeated block.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long arrival statistics are remembered: the target covers the worst lateness seen in
/// this window, and shrinks only once a bad spell has left it.
pub const CALM_WINDOW: Duration = Duration::from_secs(10);
/// How fast the target shrinks once the window is calm (per second of time), when it is close
/// to what the window asks for.
pub const SHRINK_PER_SECOND: Duration = Duration::from_micros(500);
/// Further from it, the target also shrinks by its excess over this time (so a spike's 30 ms
/// goes in about 15 s, not a minute) ...
const SHRINK_TIME_CONSTANT: f64 = 4.0;
/// ... but never faster than this, per second of time: the playout then runs 0.3 % fast, about
/// 5 cents, within the drift controller's reach (`MAX_CORRECTION`) and below what ears resolve.
pub const SHRINK_MAX_PER_SECOND: Duration = Duration::from_millis(3);
/// Spare depth above the worst lateness seen.
pub const MARGIN: Duration = Duration::from_millis(2);
/// How long the packets of a new bucket must all stay above the baseline before the bucket is
/// taken for one that follows a step.
const STEP_SETTLE: Duration = Duration::from_millis(50);
/// Bucket length for the sliding minimum and maximum.
const BUCKET: Duration = Duration::from_millis(500);
/// The transit-time baseline is the minimum over this window (short, so that clock drift, which
/// moves every transit time slowly, does not read as lateness).
const BASELINE_WINDOW: Duration = Duration::from_secs(2);

/// One bucket of arrival statistics.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    min_transit: f64,
    max_lateness: f64,
    /// The baseline the worst lateness was measured against.
    base: f64,
    /// The bucket's latest arrival.
    last: Instant,
}

/// Decides the playout depth from packet arrival times.
#[derive(Debug)]
pub struct LatencyTuner {
    frame: f64,
    floor: f64,
    ceiling: f64,
    origin: Option<(u64, Instant)>,
    buckets: VecDeque<Bucket>,
    target: f64,
    last_tick: Option<Instant>,
    jitter: f64,
    last_transit: Option<f64>,
}

impl LatencyTuner {
    /// A tuner for packets of `frame` audio, holding at least `floor` and at most `ceiling`.
    pub fn new(frame: Duration, floor: Duration, ceiling: Duration) -> Self {
        Self {
            frame: frame.as_secs_f64(),
            floor: floor.as_secs_f64(),
            ceiling: ceiling.as_secs_f64().max(floor.as_secs_f64()),
            origin: None,
            buckets: VecDeque::with_capacity(32),
            target: floor.as_secs_f64(),
            last_tick: None,
            jitter: 0.0,
            last_transit: None,
        }
    }

    /// The depth to hold now.
    pub fn target(&self) -> Duration {
        Duration::from_secs_f64(self.target.max(self.provisional()))
    }

    /// What the newest bucket's lateness asks for while it cannot yet be told a spike from a
    /// step (until the next bucket shows where the transit settled): covered at once, and
    /// dropped at once if it proves a step. A bucket that has lain wholly above the baseline
    /// for [`STEP_SETTLE`] (it began after a step) counts only what rises above its own floor:
    /// without that, every bucket after a step would ask for it again until the 2 s baseline
    /// caught up. (Sooner, its first packet may be a spike's, the next ones back down.)
    fn provisional(&self) -> f64 {
        match self.newest_lateness() {
            late if late > 0.0 => {
                (late + self.frame + MARGIN.as_secs_f64()).clamp(self.floor, self.ceiling)
            }
            _ => 0.0,
        }
    }

    /// The newest bucket's worst lateness, less its own rise once it has settled above the
    /// baseline (see [`LatencyTuner::provisional`]).
    fn newest_lateness(&self) -> f64 {
        self.buckets.back().map_or(0.0, |b| {
            let settled = b.last.saturating_duration_since(b.start) >= STEP_SETTLE;
            let raised = if settled { b.min_transit - b.base } else { 0.0 };
            b.max_lateness - raised.max(0.0)
        })
    }

    /// Interarrival jitter (RFC 3550's smoothed estimate).
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter)
    }

    /// Forgets the stream (a new session, or a resync).
    pub fn reset(&mut self) {
        self.origin = None;
        self.buckets.clear();
        self.last_transit = None;
    }

    /// Packet `seq` arrived at `now`. Returns true when the target grew.
    pub fn on_arrival(&mut self, seq: u64, now: Instant) -> bool {
        let before = self.target();
        let (seq0, t0) = *self.origin.get_or_insert((seq, now));
        // Transit time relative to the first packet: arrival minus the send time the sequence
        // number implies. Only its variation matters.
        let transit = now.saturating_duration_since(t0).as_secs_f64()
            - (seq as f64 - seq0 as f64) * self.frame;
        if let Some(prev) = self.last_transit.replace(transit) {
            self.jitter += ((transit - prev).abs() - self.jitter) / 16.0;
        }
        let need_new = self
            .buckets
            .back()
            .is_none_or(|b| now.saturating_duration_since(b.start) >= BUCKET);
        if need_new {
            self.buckets.push_back(Bucket {
                start: now,
                min_transit: transit,
                max_lateness: 0.0,
                base: transit,
                last: now,
            });
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.start) > CALM_WINDOW)
        {
            self.buckets.pop_front();
        }
        let baseline = self
            .buckets
            .iter()
            .rev()
            .take_while(|b| now.saturating_duration_since(b.start) <= BASELINE_WINDOW)
            .map(|b| b.min_transit)
            .fold(transit, f64::min);
        let lateness = (transit - baseline).max(0.0);
        if let Some(b) = self.buckets.back_mut() {
            b.min_transit = b.min_transit.min(transit);
            b.last = now;
            if lateness > b.max_lateness {
                b.max_lateness = lateness;
                b.base = baseline;
            }
        }
        let wanted = self.wanted();
        if wanted > self.target {
            self.target = wanted;
        }
        self.target() > before + Duration::from_micros(1)
    }

    /// A packet arrived after its turn had been concealed: hold one more packet's worth at once
    /// (its lateness also enters the window through [`LatencyTuner::on_arrival`]).
    pub fn on_late(&mut self) {
        self.target = (self.target + self.frame).min(self.ceiling);
    }

    /// What the window asks for: the worst lateness plus one packet and a margin.
    fn wanted(&self) -> f64 {
        (self.worst() + self.frame + MARGIN.as_secs_f64()).clamp(self.floor, self.ceiling)
    }

    /// The worst lateness in the window that was jitter, in seconds: each bucket's worst, less
    /// how far the transit's floor rose after it, and judged once a later bucket shows that
    /// floor (the newest bucket counts from the next one on). Packets delayed by a spike are
    /// followed by packets back at the old floor: all of it counts. Packets behind a step (a
    /// sender that lost capture time, a longer route) are followed by packets that stay up:
    /// only their jitter counts. A step cannot be hidden by depth (that audio is gone or comes
    /// that much later for good); the late packets it makes move the playout back once. Counted
    /// as lateness, steps a few hundred ms apart on a busy sender summed to 645 ms within the
    /// 2 s baseline and held the target at its ceiling with no packet late.
    fn worst(&self) -> f64 {
        let mut floor_after = f64::INFINITY;
        let mut worst: f64 = 0.0;
        for b in self.buckets.iter().rev() {
            if floor_after.is_finite() {
                let rise = (floor_after - b.base).max(0.0);
                worst = worst.max(b.max_lateness - rise);
            }
            floor_after = floor_after.min(b.min_transit);
        }
        worst
    }

    /// The worst lateness in the window: how far behind its best-case arrival a packet came
    /// (spikes, not steps: see `LatencyTuner::worst`), the newest bucket's included as the
    /// tuner counts it.
    pub fn worst_lateness(&self) -> Duration {
        Duration::from_secs_f64(self.worst().max(self.newest_lateness()))
    }

    /// Lets the target shrink toward what the window asks for: by 0.5 ms a second near it, by
    /// up to 3 ms a second far above it. Call it often.
    pub fn tick(&mut self, now: Instant) {
        let dt = self
            .last_tick
            .replace(now)
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let wanted = self.wanted();
        if wanted < self.target {
            let excess = self.target - wanted;
            let rate = (SHRINK_PER_SECOND.as_secs_f64() + excess / SHRINK_TIME_CONSTANT)
                .min(SHRINK_MAX_PER_SECOND.as_secs_f64());
            self.target = (self.target - rate * dt).max(wanted);
        }
    }
}

/// The largest correction the drift controller applies: 0.5 % (clocks of real devices differ by
/// well under 0.1 %; the margin lets it also take up a target change at 5 ms per second).
pub const MAX_CORRECTION: f64 = 0.005;
/// Smoothing of the depth measurement (it saw-tooths with packets and device callbacks).
const DEPTH_SMOOTHING: f64 = 0.5;
/// Proportional gain: relative rate per second of depth error.
const KP: f64 = 0.2;
/// Integral gain: critically damped with `KP` (KI = KP² / 4).
const KI: f64 = KP * KP / 4.0;

/// How fast the controller's reference moves toward a new target, in seconds of depth per
/// second: above the tuner's fastest shrink (3 ms a second), so that it follows the tuner
/// exactly, and below the correction's limit, which keeps 1 ms a second (1000 ppm) for drift.
const REFERENCE_SLOPE: f64 = 0.004;
/// The drift is learned only while the reference is this close to the target ...
const TARGET_SETTLED: f64 = 0.0005;
/// ... and moves slower than this (seconds per second): the tuner's slow shrink, 0.5 ms a second,
/// leaves it learning; a spike's faster shrink or a step does not.
const SETTLED_SLOPE: f64 = 0.001;
/// After a disturbance (the playback device stalled, packets were left out), the integral term
/// learns nothing for this long: the depth it left off the target is drained by the
/// proportional term alone (to e^-2 of it in this time). Learned, such a step read as drift:
/// the integral holds KI/KP of the error's area, 5 % of a step per second of it, so 10 ms left
/// by a stall taught 500 ppm that were not there, and the depth then wandered off its target
/// for half a minute while it was unlearned.
const DISTURBANCE_HOLD: Duration = Duration::from_secs(10);

/// Holds a buffer's depth at a target by trimming the playout rate.
///
/// The depth follows a reference that moves toward the target at no more than 4 ms a second.
/// Three terms: the reference's own slope, fed forward (a target that shrinks at 3 ms a second
/// needs the playout 0.3 % fast, with no error to ask for it); a proportional term on the depth
/// error against the reference; and an integral term that learns the clocks' drift, only while
/// the reference stands at the target. Without the first and the last, a moving target read as
/// drift: a simulated spike's shrink taught it 650 ppm that were not there, and the depth then
/// overshot its target for half a minute (`a_moving_target_is_followed_and_not_learned_as_drift`).
#[derive(Debug, Clone)]
pub struct DriftControl {
    smoothed: Option<f64>,
    smoothed_error: f64,
    reference: Option<f64>,
    moved: bool,
    /// The depth was cut: the next error is taken as measured, not smoothed from before.
    cut: bool,
    /// Until when the integral learns nothing (after a disturbance).
    hold_until: Option<Instant>,
    integral: f64,
    last: Option<Instant>,
    correction: f64,
}

impl Default for DriftControl {
    fn default() -> Self {
        Self::new()
    }
}

impl DriftControl {
    /// A controller with no history.
    pub fn new() -> Self {
        Self {
            smoothed: None,
            smoothed_error: 0.0,
            reference: None,
            moved: false,
            cut: false,
            hold_until: None,
            integral: 0.0,
            last: None,
            correction: 1.0,
        }
    }

    /// The smoothed depth, once measured.
    pub fn smoothed_depth(&self) -> Option<Duration> {
        self.smoothed.map(|d| Duration::from_secs_f64(d.max(0.0)))
    }

    /// The current correction: output frames per input frame relative to nominal (above 1
    /// stretches the audio and deepens the buffer; below 1 drains it).
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// The sender's clock against the device's, as far as the controller has learned it, in
    /// parts per million (positive: the sender runs fast). From the integral term alone: the
    /// proportional term also answers momentary depth errors.
    pub fn drift_ppm(&self) -> f64 {
        (1.0 / (1.0 - KI * self.integral) - 1.0) * 1e6
    }

    /// The depth has been brought to the target by other means (concealment inserted at once
    /// after a late packet): the next update takes the reference straight there, rather than
    /// draining the depth back to a reference still on its way.
    pub fn moved_to_target(&mut self) {
        self.moved = true;
    }

    /// The depth was just cut by `by` seconds (packets left out): the smoothed depth drops with
    /// it, the error starts afresh from the next measurement, and the reference goes to the
    /// target, as after [`DriftControl::moved_to_target`]: the cut is not drained a second time.
    pub fn shift(&mut self, by: f64, now: Instant) {
        if let Some(s) = self.smoothed.as_mut() {
            *s -= by;
        }
        self.moved = true;
        self.cut = true;
        self.disturbed(now);
    }

    /// Something other than the clocks moved the depth (the playback device stalled while the
    /// stream went on, say): what it leaves off the target is not drift, and the integral term
    /// does not learn it (`DISTURBANCE_HOLD`).
    pub fn disturbed(&mut self, now: Instant) {
        self.hold_until = Some(now + DISTURBANCE_HOLD);
    }

    /// Takes a depth measurement and returns the new correction.
    pub fn update(&mut self, depth: Duration, target: Duration, now: Instant) -> f64 {
        let depth = depth.as_secs_f64();
        let target = target.as_secs_f64();
        let dt = self
            .last
            .replace(now)
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let blend = (dt / DEPTH_SMOOTHING).min(1.0);
        // The reference: from where the depth starts, toward the target at a bounded slope; or
        // at once, when the depth was moved there.
        let from = self.reference.unwrap_or(depth);
        let (reference, slope) = if std::mem::take(&mut self.moved) {
            (target, 0.0)
        } else {
            let by = (target - from).clamp(-REFERENCE_SLOPE * dt, REFERENCE_SLOPE * dt);
            (from + by, if dt > 0.0 { by / dt } else { 0.0 })
        };
        self.reference = Some(reference);
        self.smoothed = Some(self.smoothed.map_or(depth, |s| s + (depth - s) * blend));
        // Positive error: too much queued, drain (correction below 1). Smoothed: the depth
        // saw-tooths with packets and device callbacks.
        self.smoothed_error = if std::mem::take(&mut self.cut) {
            depth - reference
        } else {
            self.smoothed_error + (depth - reference - self.smoothed_error) * blend
        };
        let error = self.smoothed_error;
        let integral = self.integral + error * dt;
        let raw = KP * error + KI * integral - slope;
        // Anti-windup: integrate only while the output is not pinned at its limit, and only
        // while the reference stands at the target (a creep of under 1 ms a second aside).
        if self.hold_until.is_some_and(|t| now >= t) {
            self.hold_until = None;
        }
        if raw.abs() < MAX_CORRECTION
            && self.hold_until.is_none()
            && (target - reference).abs() < TARGET_SETTLED
            && slope.abs() < SETTLED_SLOPE
        {
            self.integral = integral;
        }
        self.correction =
            1.0 - (KP * error + KI * self.integral - slope).clamp(-MAX_CORRECTION, MAX_CORRECTION);
        self.correction
    }
}

#[cfg(test)]
mod tests;
