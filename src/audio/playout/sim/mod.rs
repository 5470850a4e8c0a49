//! The playout against a simulated device and network, in simulated time: minutes of audio
//! in seconds, with clocks that drift and packets that come late, out of order or twice.

mod outcomes;

use super::*;
use crate::protocol::frame::SecurityMode;

const RATE: u32 = 48_000;
const FRAME: u16 = 240; // 5 ms
/// The simulated device's format.
const SIM_FORMAT: StreamFormat = StreamFormat {
    sample_rate: RATE,
    channels: 1,
};

/// A playback device with a callback every 5 ms taking 240 frames. It keeps what it played and
/// counts the frames the playout left silent once it had started (underruns).
pub(super) struct SimDevice {
    next_callback: Option<Instant>,
    pub(super) played: Vec<f32>,
    pub(super) underruns: u64,
}

impl SimDevice {
    pub(super) fn new() -> Self {
        Self {
            next_callback: None,
            played: Vec::new(),
            underruns: 0,
        }
    }

    /// The callbacks due by `now`, each pulling its period from `core`.
    fn pull_from(&mut self, core: &mut PlayoutCore, now: Instant) {
        let period = Duration::from_micros(5_000);
        let mut buf = [0.0f32; FRAME as usize];
        let mut t = *self.next_callback.get_or_insert(now);
        while t <= now {
            let was_playing = core.playing;
            let pulled = core.pull(t, NO_END, &mut buf).expect("pull");
            if was_playing {
                self.underruns += (buf.len() - pulled.frames) as u64;
            }
            self.played.extend_from_slice(&buf);
            t += period;
        }
        self.next_callback = Some(t);
    }

    /// The device stops calling back for `by` and then goes on where it was, that time lost
    /// (an xrun of a busy audio server).
    pub(super) fn stall(&mut self, by: Duration) {
        if let Some(t) = self.next_callback.as_mut() {
            *t += by;
        }
    }
}

/// splitmix64: a reproducible network.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the network does to packet `seq` sent at `sent`: arrival times (none: lost; two:
/// duplicated).
type Network = dyn FnMut(u64, f64, &mut Rng) -> Vec<f64>;

struct Run {
    device: SimDevice,
    /// (seconds, smoothed depth - target) samples every 100 ms.
    errors: Vec<(f64, f64)>,
    stats: JitterStats,
    /// Concealed packets so far, every 100 ms.
    concealed: Vec<u64>,
    /// The tuner's final target (without the device cushion).
    target: Duration,
    drift_ppm: f64,
}

/// Streams a 440 Hz sine for `seconds` from a sender whose clock runs `ppm` fast through
/// `net` into the simulated device, stepping time by 1 ms.
/// The simulated stream: plain PCM, mono, 5 ms packets.
fn sim_params() -> SessionParams {
    SessionParams {
        direction: crate::protocol::frame::Direction::ServerToClient,
        codec: crate::protocol::frame::Codec::PcmS16,
        sample_rate: RATE,
        channels: 1,
        frame_frames: FRAME,
        mode: SecurityMode::Plain,
        session_id: 1,
    }
}

fn simulate(seconds: f64, ppm: f64, floor_ms: u64, net: &mut Network) -> Run {
    let sine = |n: u64| {
        let v = (std::f64::consts::TAU * 440.0 * n as f64 / f64::from(RATE)).sin();
        (v * 16_000.0) as i16
    };
    simulate_with(seconds, ppm, floor_ms, net, &sine, &mut |_, _, _| {})
}

/// What a simulated run lets a test see after each 1 ms step, once the playout has fed (or
/// been pulled by) the device and before the device plays on: the step, the core, the
/// device.
type Observer<'a> = dyn FnMut(u64, &PlayoutCore, &mut SimDevice) + 'a;

/// [`simulate`], with frame `n` of the stream's signal given by `sample`, and `observe`
/// called at every step.
fn simulate_with(
    seconds: f64,
    ppm: f64,
    floor_ms: u64,
    net: &mut Network,
    sample: &dyn Fn(u64) -> i16,
    observe: &mut Observer<'_>,
) -> Run {
    let t0 = Instant::now();
    let params = sim_params();
    let mut device = SimDevice::new();
    let mut core = PlayoutCore::new(
        params,
        Duration::from_millis(floor_ms),
        SIM_FORMAT,
        true,
        t0,
    )
    .expect("core");
    let frame_s = f64::from(FRAME) / f64::from(RATE);
    let mut rng = Rng(7);
    let mut in_flight: Vec<(f64, u64)> = Vec::new();
    let mut next_seq = 0u64;
    let mut errors = Vec::new();
    let mut concealed = Vec::new();
    let mut payload = Vec::with_capacity(usize::from(FRAME) * 2);
    let steps = (seconds * 1000.0) as u64;
    for ms in 0..steps {
        let t = ms as f64 / 1000.0;
        // The sender's packets up to now, by its own clock.
        while next_seq as f64 * frame_s / (1.0 + ppm * 1e-6) <= t {
            let sent = next_seq as f64 * frame_s / (1.0 + ppm * 1e-6);
            for at in net(next_seq, sent, &mut rng) {
                in_flight.push((at, next_seq));
            }
            next_seq += 1;
        }
        in_flight.sort_by(|a, b| a.0.total_cmp(&b.0));
        let now = t0 + Duration::from_secs_f64(t);
        while in_flight.first().is_some_and(|(at, _)| *at <= t) {
            let (_, seq) = in_flight.remove(0);
            payload.clear();
            for i in 0..u64::from(FRAME) {
                let v = sample(seq * u64::from(FRAME) + i);
                payload.extend_from_slice(&v.to_le_bytes());
            }
            assert!(core.on_audio(seq * u64::from(FRAME), &payload, now));
        }
        device.pull_from(&mut core, now);
        observe(ms, &core, &mut device);
        if ms % 100 == 0 && ms > 0 {
            let f = core.figures();

            errors.push((t, f.depth.as_secs_f64() - f.target.as_secs_f64()));
            concealed.push(core.stats().lost);
        }
    }
    Run {
        device,
        errors,
        stats: core.stats(),
        concealed,
        target: core.tuner.target(),
        drift_ppm: core.figures().drift_ppm,
    }
}

/// The stream position the playout says is at the head of what the device plays next, and
/// the sample the device then plays, for a sender 300 ppm fast (the resampler trims the
/// rate) over a jittery network, checked every 100 ms from the 2nd to the 60th
/// second. Each sample carries its own position (a ramp), so the device's output says which
/// position it is. Returns the largest disagreement, in frames.
fn position_error() -> (f64, usize) {
    const WRAP: u64 = 16_000;
    let ramp = |n: u64| ((n % WRAP) as i64 - 8_000) as i16;
    let mut jitter = |_: u64, sent: f64, rng: &mut Rng| vec![sent + 0.001 + 0.004 * rng.unit()];
    // (position said to be next, index in `played` where the device plays next): the next
    // callback's buffer starts with what is staged.
    let mut said: Vec<(u64, usize)> = Vec::new();
    let mut note = |ms: u64, core: &PlayoutCore, device: &mut SimDevice| {
        if !ms.is_multiple_of(100) || ms < 2_000 {
            return;
        }
        if let Some(p) = core.next_out_position(core.staged_frames()) {
            said.push((p, device.played.len()));
        }
    };
    let run = simulate_with(60.0, 300.0, 10, &mut jitter, &ramp, &mut note);
    let device = run.device;
    let mut worst = 0.0f64;
    let mut checked = 0;
    for (position, index) in said {
        let Some(&v) = device.played.get(index) else {
            continue;
        };
        let heard = (f64::from(v) * 32_768.0 + 8_000.0).round();
        let expected = (position % WRAP) as f64;
        // Away from the ramp's wrap, where the resampler smears the jump.
        if !(200.0..(WRAP - 200) as f64).contains(&expected) {
            continue;
        }
        worst = worst.max((heard - expected).abs());
        checked += 1;
    }
    (worst, checked)
}
