use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_steady_stream_keeps_the_floor() {
    let t0 = Instant::now();
    let mut t = LatencyTuner::new(5 * MS, 10 * MS, 200 * MS);
    for seq in 0..2_000u64 {
        let now = t0 + 5 * MS * seq as u32;
        assert!(!t.on_arrival(seq, now));
        t.tick(now);
    }
    assert_eq!(t.target(), 10 * MS);
    assert!(t.jitter() < Duration::from_micros(10));
}

#[test]
fn late_packets_grow_it_at_once_and_calm_shrinks_it_gently() {
    let t0 = Instant::now();
    let mut t = LatencyTuner::new(5 * MS, 10 * MS, 200 * MS);
    let at = |seq: u64, extra: Duration| t0 + 5 * MS * seq as u32 + extra;
    for seq in 0..400u64 {
        t.on_arrival(seq, at(seq, Duration::ZERO));
    }
    // One packet 30 ms late: the target covers it at once.
    assert!(t.on_arrival(400, at(400, 30 * MS)));
    let grown = t.target();
    assert!(grown >= 35 * MS && grown <= 40 * MS, "{grown:?}");
    // Calm: nothing changes within the window; then it shrinks to the floor, never faster
    // than 3 ms a second (the playout runs at most 0.3 % fast) and, as it nears the floor,
    // no faster than its 0.5 ms a second plus a quarter of what is left.
    let mut seq = 401;
    let mut target_at = |secs: u32, t: &mut LatencyTuner| {
        while at(seq, Duration::ZERO)
            < t0 + 2 * Duration::from_secs(1) + Duration::from_secs(secs.into())
        {
            let now = at(seq, Duration::ZERO);
            t.on_arrival(seq, now);
            t.tick(now);
            seq += 1;
        }
        t.target()
    };
    assert_eq!(target_at(9, &mut t), grown, "held through the calm window");
    let mut before = target_at(10, &mut t);
    let mut back = None;
    for second in 11..120 {
        let now = target_at(second, &mut t);
        let step = before.saturating_sub(now).as_secs_f64();
        let left = before.saturating_sub(10 * MS).as_secs_f64();
        assert!(now <= before, "it only shrinks: {now:?} after {before:?}");
        assert!(step <= 0.003 + 1e-6, "{step} s in one second");
        assert!(
            step <= 0.0005 + left / 4.0 + 1e-6,
            "{step} s with {left} s left"
        );
        if now == 10 * MS && back.is_none() {
            back = Some(second);
        }
        before = now;
    }
    // 27.5 ms above the floor: about 6 s at the 3 ms cap, then about 7 s of easing in (at
    // 0.5 ms a second throughout it would take 55 s).
    let back = back.expect("back to the floor");
    assert!((20..=30).contains(&back), "back to the floor at {back} s");
}

/// Packets that come `extra(seconds)` later than their schedule, 5 ms apart, through a
/// tuner with a 10 ms floor: its target at each whole second up to `seconds`.
fn targets(seconds: u32, extra: impl Fn(f64) -> f64) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut t = LatencyTuner::new(5 * MS, 10 * MS, 250 * MS);
    let mut out = Vec::new();
    for seq in 0..u64::from(seconds) * 200 {
        let sent = seq as f64 * 0.005;
        let now = t0 + Duration::from_secs_f64(sent + extra(sent));
        t.on_arrival(seq, now);
        t.tick(now);
        if seq % 200 == 199 {
            out.push(t.target());
        }
    }
    out
}

/// A sender that loses 200 ms of capture at 3.2 s sends every later packet 200 ms later: a
/// step, which no depth hides. Covered at once while it could be a spike, then dropped
/// within half a second, once the packets after it stay up: the target is back at the
/// floor a second on. The same 200 ms as a spike of 3 s (the transit comes back down) is
/// learned once it ends. A single packet 200 ms late is covered at once.
#[test]
fn a_step_in_transit_is_not_held_as_lateness_and_a_long_spike_is() {
    let step = targets(20, |sent| if sent >= 3.2 { 0.2 } else { 0.0 });
    assert_eq!(step[2], 10 * MS, "before the step");
    assert!(
        step[3..].iter().all(|&t| t == 10 * MS),
        "a second after the step the target is the floor again: {step:?}"
    );
    let spike = targets(
        20,
        |sent| {
            if (3.2..6.2).contains(&sent) {
                0.2
            } else {
                0.0
            }
        },
    );
    assert!(
        spike[7..14].iter().all(|&t| t >= 200 * MS),
        "once the transit came back, the 200 ms count: {spike:?}"
    );
    let late = |s: u32| {
        targets(s, |sent| {
            if (3.2..3.204).contains(&sent) {
                0.2
            } else {
                0.0
            }
        })
    };
    assert!(
        late(4)[3] >= 200 * MS && late(12)[11] >= 200 * MS,
        "one late packet is covered at once and held: {:?}",
        late(12)
    );
}

#[test]
fn clock_drift_alone_is_not_lateness() {
    // A sender 500 ppm slow: every transit time grows by 0.5 ms per second.
    let t0 = Instant::now();
    let mut t = LatencyTuner::new(5 * MS, 10 * MS, 200 * MS);
    for seq in 0..(200 * 600u64) {
        let now = t0 + Duration::from_secs_f64(seq as f64 * 0.005 * 1.0005);
        t.on_arrival(seq, now);
        t.tick(now);
    }
    assert_eq!(t.target(), 10 * MS);
}

/// A buffer filled at `rate_in` and drained at the device's nominal rate through the
/// correction: the controller must hold it at the target.
fn run_drift(ppm: f64) -> (f64, f64) {
    let t0 = Instant::now();
    let target = 20 * MS;
    let mut c = DriftControl::new();
    let mut depth = 0.020; // seconds of audio queued
    let mut worst: f64 = 0.0;
    let step = 0.005;
    for i in 0..(600.0 / step) as u32 {
        let now = t0 + Duration::from_secs_f64(f64::from(i) * step);
        // Input arrives at (1 + ppm) per device second, is played out at 1/correction.
        let corr = c.update(Duration::from_secs_f64(depth), target, now);
        depth += step * (1.0 + ppm * 1e-6) * corr - step;
        if i as f64 * step > 60.0 {
            worst = worst.max((depth - 0.020).abs());
        }
    }
    (worst, c.drift_ppm())
}

#[test]
fn drift_is_taken_up_by_the_rate() {
    for ppm in [300.0, -300.0, 2_000.0] {
        let (worst, learned) = run_drift(ppm);
        assert!(worst < 0.001, "{ppm} ppm: depth off by {worst} s");
        assert!(
            (learned - ppm).abs() < 20.0,
            "{ppm} ppm learned as {learned}"
        );
    }
}

/// The target moves as the tuner moves it: held high after a spike, then shrinking at the
/// tuner's fastest (3 ms a second) to 12 ms, then grown by a step of 18 ms. The depth must
/// follow without the drift estimate taking the moves for clock drift.
fn run_moving_target(ppm: f64) -> (f64, f64, f64, f64) {
    let t0 = Instant::now();
    let target_at = |t: f64| {
        if t < 5.0 {
            0.035
        } else if t < 60.0 {
            (0.035 - 0.003 * (t - 5.0)).max(0.012)
        } else {
            0.030
        }
    };
    let mut c = DriftControl::new();
    let mut depth = 0.035;
    let step = 0.005;
    let (mut ramp_err, mut worst_drift, mut overshoot, mut settle): (f64, f64, f64, f64) =
        (0.0, 0.0, 0.0, 0.0);
    for i in 0..(120.0 / step) as u32 {
        let t = f64::from(i) * step;
        let now = t0 + Duration::from_secs_f64(t);
        let target = target_at(t);
        let corr = c.update(
            Duration::from_secs_f64(depth),
            Duration::from_secs_f64(target),
            now,
        );
        depth += step * (1.0 + ppm * 1e-6) * corr - step;
        if t > 45.0 {
            // Learned by now (the 300 ppm take half a minute of a standing target), and
            // kept through the step that follows.
            worst_drift = worst_drift.max((c.drift_ppm() - ppm).abs());
        }
        if (6.0..60.0).contains(&t) {
            ramp_err = ramp_err.max((depth - target).abs());
        }
        if t >= 60.0 {
            overshoot = overshoot.max(depth - target);
            if (depth - target).abs() > 0.001 {
                settle = t - 60.0;
            }
        }
    }
    (ramp_err, worst_drift, overshoot, settle)
}

#[test]
fn a_moving_target_is_followed_and_not_learned_as_drift() {
    for ppm in [0.0, 300.0, -300.0] {
        let (ramp_err, drift_err, overshoot, settle) = run_moving_target(ppm);
        assert!(
            ramp_err < 0.002,
            "{ppm} ppm: {ramp_err} s off the shrinking target"
        );
        assert!(drift_err < 30.0, "{ppm} ppm: learned {drift_err} ppm wrong");
        assert!(
            overshoot < 0.001,
            "{ppm} ppm: {overshoot} s above the grown target"
        );
        assert!(
            settle < 8.0,
            "{ppm} ppm: {settle} s to reach the grown target"
        );
    }
}

#[test]
fn a_depth_moved_with_its_target_is_left_there() {
    let t0 = Instant::now();
    let mut c = DriftControl::new();
    let mut depth = 0.012;
    let mut target = 0.012;
    let step = 0.0025;
    let mut worst: f64 = 0.0;
    for i in 0..(40.0 / step) as u32 {
        let t = f64::from(i) * step;
        if i == (10.0 / step) as u32 {
            // A late packet: the target grows by 8 ms and concealment fills the depth to it.
            target = 0.020;
            depth += 0.008;
            c.moved_to_target();
        }
        let now = t0 + Duration::from_secs_f64(t);
        let corr = c.update(
            Duration::from_secs_f64(depth),
            Duration::from_secs_f64(target),
            now,
        );
        depth += step * corr - step;
        if t >= 10.0 {
            worst = worst.max((depth - target).abs());
        }
    }
    assert!(worst < 0.0005, "the depth left its target by {worst} s");
    assert!(c.drift_ppm().abs() < 10.0, "learned {} ppm", c.drift_ppm());
}
