//! What one Opus stream must cost at least on this machine, part by part: the wake-ups and the
//! loopback datagram (a thread that sends a datagram per packet, another that receives it, and
//! nothing else), and libopus with EchoWarp's settings, run flat out and run at the stream's
//! pace (where each frame meets caches that other work has cooled). `bench/stream.py` measures
//! the whole program; this says which part of its figure any program would pay.
//!
//! Run: `cargo bench --bench floor` (about a minute; figures, not pass or fail).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use echowarp::audio::codec::{Decoder, OpusEncoder};
use echowarp::protocol::frame::{Codec, Direction, SecurityMode, SessionParams};

const RATE: u32 = 48_000;
const RUNS: usize = 3;

/// This process's CPU time so far (user and system, all threads), to the nanosecond.
#[cfg(unix)]
fn cpu_seconds() -> f64 {
    seconds(rustix::time::ClockId::ProcessCPUTime)
}

/// This thread's CPU time so far: what it ran, not the time it waited for a core.
#[cfg(unix)]
fn thread_cpu() -> Duration {
    Duration::from_secs_f64(seconds(rustix::time::ClockId::ThreadCPUTime))
}

#[cfg(unix)]
fn seconds(clock: rustix::time::ClockId) -> f64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Elsewhere the CPU clocks are not read: the bench runs and its CPU figures show NaN.
#[cfg(not(unix))]
fn cpu_seconds() -> f64 {
    f64::NAN
}

#[cfg(not(unix))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Percent of one core that sending one `bytes`-byte datagram every `period` over loopback and
/// receiving it on another thread costs, over `span`.
fn wake_floor(period: Duration, bytes: usize, span: Duration) -> std::io::Result<f64> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let start = Instant::now();
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while start.elapsed() < span + Duration::from_millis(50) {
            let _ = rx.recv(&mut buf);
        }
    });
    let cpu0 = cpu_seconds();
    let payload = vec![0x5a; bytes];
    let mut due = start;
    while start.elapsed() < span {
        due += period;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        tx.send_to(&payload, to)?;
    }
    let _ = receiver.join();
    Ok(100.0 * (cpu_seconds() - cpu0) / start.elapsed().as_secs_f64())
}

fn chord(frames: usize) -> Vec<i16> {
    (0..frames)
        .flat_map(|i| {
            let t = i as f64 / f64::from(RATE);
            let v = [220.0, 329.6, 554.4]
                .iter()
                .map(|hz| (std::f64::consts::TAU * hz * t).sin() * 8_000.0)
                .sum::<f64>() as i16;
            [v, (f64::from(v) * 0.8) as i16]
        })
        .collect()
}

/// Percent of one core that encoding and decoding `audio` costs (this thread's CPU time inside
/// libopus per second of audio), flat out or with each frame's turn waited for as a live stream would.
fn codec_cost(audio: &[i16], frame: usize, fec: bool, paced: bool) -> Result<f64, String> {
    let mut enc = OpusEncoder::new(RATE, 2, 128, fec, frame).map_err(|e| e.to_string())?;
    let params = SessionParams {
        direction: Direction::ServerToClient,
        codec: Codec::Opus,
        mode: SecurityMode::Plain,
        sample_rate: RATE,
        channels: 2,
        frame_frames: u16::try_from(frame).map_err(|e| e.to_string())?,
        session_id: 1,
    };
    let mut dec = Decoder::new(&params).map_err(|e| e.to_string())?;
    let period = Duration::from_secs_f64(frame as f64 / f64::from(RATE));
    let mut out = Vec::with_capacity(frame * 2);
    let mut busy = Duration::ZERO;
    let mut due = Instant::now();
    let chunks: Vec<&[i16]> = audio.chunks_exact(frame * 2).collect();
    for pcm in &chunks {
        if paced {
            due += period;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = thread_cpu();
        let packet = enc.encode(pcm).map_err(|e| e.to_string())?;
        dec.decode(packet, &mut out).map_err(|e| e.to_string())?;
        busy += thread_cpu().saturating_sub(t);
    }
    let seconds = (chunks.len() * frame) as f64 / f64::from(RATE);
    Ok(100.0 * busy.as_secs_f64() / seconds)
}

fn main() -> Result<(), String> {
    println!(
        "floor: one datagram per packet over loopback, sender and receiver threads, nothing else"
    );
    println!("  (% of one core, median of {RUNS} runs of 4 s)");
    for ms in [2.5, 5.0, 10.0, 20.0] {
        let period = Duration::from_secs_f64(ms / 1000.0);
        let runs = (0..RUNS)
            .map(|_| wake_floor(period, 400, Duration::from_secs(4)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("loopback: {e}"))?;
        let (lo, hi) = runs
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
        println!(
            "  {ms:4} ms packets: {:.2} % ({lo:.2}-{hi:.2})",
            median(runs.clone())
        );
    }

    println!("opus at 128 kb/s, 48 kHz stereo, encode + decode, % of one core:");
    println!("  frame    fec   flat out   paced (median of {RUNS} runs of 2 s)");
    let audio = chord(RATE as usize * 2);
    for frame in [120usize, 240, 480, 960] {
        for fec in [true, false] {
            let flat = median(
                (0..RUNS)
                    .map(|_| codec_cost(&audio, frame, fec, false))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let paced = median(
                (0..RUNS)
                    .map(|_| codec_cost(&audio, frame, fec, true))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            println!(
                "  {:4.1} ms  {:5}  {flat:6.2} %   {paced:6.2} %",
                frame as f64 * 1000.0 / f64::from(RATE),
                fec
            );
        }
    }
    Ok(())
}
