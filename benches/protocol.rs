//! Per-packet costs on the audio path: sealing and opening a 960-byte packet (5 ms of 48 kHz
//! stereo) in each protection mode, the jitter buffer's push and pop, and drift correction's
//! resampling of one packet.
//! Run: `cargo bench --bench protocol`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use echowarp::audio::jitter::JitterBuffer;
use echowarp::protocol::datagram::{write_audio_body, Kind, Opener, Sealer, MAX_DATAGRAM};
use echowarp::protocol::frame::SecurityMode;
use echowarp::protocol::keys::{transcript, SessionKeys};

fn seal_open(c: &mut Criterion) {
    let keys = SessionKeys::derive(b"bench", &transcript(&[b"bench"])).0;
    let samples: Vec<i16> = (0..480).map(|i| (i * 37) as i16).collect();
    let mut body = Vec::new();
    write_audio_body(0, &samples, &mut body);
    let mut group = c.benchmark_group("datagram_960_bytes");
    group.throughput(Throughput::Bytes(960));
    for mode in [
        SecurityMode::Encrypted,
        SecurityMode::Integrity,
        SecurityMode::Plain,
    ] {
        let mut sealer = Sealer::new(mode, 7, &keys.server_to_client);
        let mut out = [0u8; MAX_DATAGRAM];
        group.bench_function(format!("seal_{}", mode.name()), |b| {
            b.iter(|| sealer.seal(Kind::Audio, std::hint::black_box(&body), &mut out))
        });
        // Open fresh datagrams: each needs its own counter, as on the wire.
        let mut sealer = Sealer::new(mode, 7, &keys.server_to_client);
        let mut opener = Opener::new(mode, 7, &keys.server_to_client);
        let mut dg = [0u8; MAX_DATAGRAM];
        group.bench_function(format!("seal_and_open_{}", mode.name()), |b| {
            b.iter(|| {
                let n = sealer.seal(Kind::Audio, &body, &mut dg);
                opener.open(&mut dg[..n]).map(|(_, b)| b.len()).unwrap_or(0)
            })
        });
    }
    group.finish();
}

fn jitter(c: &mut Criterion) {
    let payload: Vec<u8> = (0..960).map(|i| i as u8).collect();
    c.bench_function("jitter_push_pop_one_packet", |b| {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(480, Duration::ZERO, t0);
        let mut out = Vec::with_capacity(480);
        let mut seq = 0u64;
        b.iter(|| {
            jb.push(seq, &payload, t0);
            let p = jb.pop(t0, true, &mut out);
            seq += 1;
            p
        })
    });
    c.bench_function("jitter_reordered_4_deep", |b| {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(480, Duration::ZERO, t0);
        let mut out = Vec::with_capacity(480);
        let mut base = 0u64;
        b.iter(|| {
            for s in [3, 1, 0, 2] {
                jb.push(base + s, &payload, t0);
            }
            while jb.pop(t0, false, &mut out).is_some() {}
            base += 4;
        })
    });
}

/// Drift correction's cost per 5 ms stereo packet, for each interpolation.
fn drift_resampler(c: &mut Criterion) {
    use echowarp::audio::resample::{Interpolation, RateConverter};
    let input: Vec<f32> = (0..480).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
    for kind in [Interpolation::Polynomial, Interpolation::Sinc] {
        let mut rc = RateConverter::adjustable_with(48_000, 48_000, 2, 240, kind)
            .expect("a valid converter");
        rc.set_correction(1.0003);
        let mut out = Vec::with_capacity(2048);
        c.bench_function(&format!("drift_resample_5ms_stereo_{kind:?}"), |b| {
            b.iter(|| {
                out.clear();
                rc.process(std::hint::black_box(&input), &mut out)
                    .map(|()| out.len())
            })
        });
    }
}

/// Opus's cost per 5 ms stereo frame of a chord: encoding (128 kb/s, FEC on) and decoding.
fn opus(c: &mut Criterion) {
    use echowarp::audio::codec::{Decoder, OpusEncoder};
    use echowarp::protocol::frame::{Codec, Direction, SecurityMode, SessionParams};
    let frames: Vec<Vec<i16>> = (0..200)
        .map(|f| {
            (0..240)
                .flat_map(|i| {
                    let t = f64::from(f * 240 + i) / 48_000.0;
                    let v = [220.0, 329.6, 554.4]
                        .iter()
                        .map(|hz| (std::f64::consts::TAU * hz * t).sin() * 8_000.0)
                        .sum::<f64>() as i16;
                    [v, v]
                })
                .collect()
        })
        .collect();
    let mut enc = OpusEncoder::new(48_000, 2, 128, true, 240).expect("encoder");
    let mut i = 0;
    c.bench_function("opus_encode_5ms_stereo", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            enc.encode(&frames[i]).map(<[u8]>::len)
        })
    });
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| enc.encode(f).map(<[u8]>::to_vec).unwrap_or_default())
        .collect();
    let params = SessionParams {
        direction: Direction::ServerToClient,
        codec: Codec::Opus,
        mode: SecurityMode::Plain,
        sample_rate: 48_000,
        channels: 2,
        frame_frames: 240,
        session_id: 1,
    };
    let mut dec = Decoder::new(&params).expect("decoder");
    let mut out = Vec::with_capacity(480);
    let mut j = 0;
    c.bench_function("opus_decode_5ms_stereo", |b| {
        b.iter(|| {
            j = (j + 1) % packets.len();
            dec.decode(&packets[j], &mut out).map(|()| out.len())
        })
    });
}

criterion_group!(benches, seal_open, jitter, drift_resampler, opus);
criterion_main!(benches);
