//! Streaming through the impairment relay (tests/common/netem.rs) on 127.0.0.1: real binaries,
//! real sockets, a network that loses, delays, reorders and duplicates datagrams with a fixed
//! seed. What the client records is measured against what the server sent, block by block.
//!
//! Needs: nothing but loopback sockets.

mod common;
use common::*;

use common::netem::{Impairment, Relay};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One packet: 5 ms of 48 kHz stereo.
const BLOCK: usize = 240 * 2;
/// One packet with redundancy: two must fit a datagram, so 155 frames (3.2 ms).
const RED_BLOCK: usize = 155 * 2;

/// What the server streams: 4 s of 48 kHz stereo, written by one of the common helpers.
type Material = fn(&std::path::Path, f32, u32, u16) -> Vec<i16>;

/// Streams 4 s of `material` through a relay impairing datagrams towards the client; returns
/// the source, the recording, the relay and the client's log.
fn through_with(
    material: Material,
    down: Impairment,
    seed: u64,
    server_flags: &[&str],
) -> (Vec<i16>, Vec<i16>, Relay, String) {
    let sb = Sandbox::new();
    let want = material(&sb.path("in.wav"), 4.0, 48_000, 2);
    let port = free_port().to_string();
    let mut args = vec!["-d", "wav:in.wav", "-u", &port];
    args.extend_from_slice(server_flags);
    let mut server = sb.spawn(&args);
    let port: u16 = port.parse().expect("port");
    server.wait_for("listening on", SECS(10));
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        ([127, 0, 0, 1], port).into(),
        down,
        Impairment::default(),
        seed,
    )
    .expect("relay");
    let via = relay.addr().port().to_string();
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &via, "-d", "wav:out.wav"]);
    let c = client.wait_timeout(SECS(30));
    assert!(c.success(), "client: {c}\n{}", client.stderr());
    server.wait_timeout(SECS(10));
    let (_, got) = read_wav(&sb.path("out.wav"));
    (want, got, relay, client.stderr())
}

/// White noise through the relay (PCM is judged sample for sample).
fn through(
    down: Impairment,
    seed: u64,
    server_flags: &[&str],
) -> (Vec<i16>, Vec<i16>, Relay, String) {
    through_with(write_test_wav, down, seed, server_flags)
}

/// How each 5 ms block of the recording compares with the source.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    /// Sample for sample.
    Exact,
    /// Altered but mostly there (a fade back in after a concealment).
    Touched,
    /// Mostly missing: the error carries over half the block's energy (a concealment).
    Gap,
}

/// Classifies every block, the recording aligned by whole blocks (it starts at the first
/// packet that arrived); returns the blocks and the alignment.
fn blocks(want: &[i16], got: &[i16], block: usize) -> (Vec<Block>, usize) {
    let classify = |shift: usize| -> Vec<Block> {
        got.chunks(block)
            .enumerate()
            .map(|(i, g)| {
                let at = (i + shift) * block;
                let Some(w) = want.get(at..at + g.len()) else {
                    return Block::Gap;
                };
                if w == g {
                    return Block::Exact;
                }
                let energy: f64 = w.iter().map(|&s| f64::from(s).powi(2)).sum();
                let error: f64 = w
                    .iter()
                    .zip(g)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                if error > energy / 2.0 {
                    Block::Gap
                } else {
                    Block::Touched
                }
            })
            .collect()
    };
    (0..5)
        .map(|s| (classify(s), s))
        .max_by_key(|(b, _)| b.iter().filter(|&&x| x == Block::Exact).count())
        .unwrap_or_default()
}

/// The longest run of gap blocks.
fn longest_gap(blocks: &[Block]) -> usize {
    blocks
        .split(|&b| b != Block::Gap)
        .map(<[Block]>::len)
        .max()
        .unwrap_or(0)
}

/// Signal-to-noise ratio of the recording against the source, in dB, aligned by blocks.
fn snr_db(want: &[i16], got: &[i16], shift_samples: usize) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (i, &g) in got.iter().enumerate() {
        if let Some(&w) = want.get(i + shift_samples) {
            sig += f64::from(w).powi(2);
            err += (f64::from(w) - f64::from(g)).powi(2);
        }
    }
    10.0 * (sig / err.max(1.0)).log10()
}

#[test]
fn reordering_and_duplicates_five_packets_deep_cost_no_audio() {
    let net = Impairment {
        reorder: 0.1,
        reorder_delay: Duration::from_millis(25), // behind the next five packets
        duplicate: 0.1,
        ..Impairment::default()
    };
    let (want, got, relay, log) = through(net, 11, &[]);
    let reordered = relay.stats.reordered.load(Ordering::Relaxed);
    let duplicated = relay.stats.duplicated.load(Ordering::Relaxed);
    assert!(
        reordered > 50 && duplicated > 50,
        "{reordered} {duplicated}"
    );
    assert_sample_exact(&want, &got);
    assert!(log.contains(" 0 concealed"), "{log}");
    eprintln!("{reordered} datagrams reordered, {duplicated} duplicated: recording exact");
}

#[test]
fn random_loss_is_concealed_one_block_per_lost_packet() {
    let net = Impairment {
        loss: 0.05,
        delay: Duration::from_millis(2),
        ..Impairment::default()
    };
    let (want, got, relay, log) = through(net, 5, &[]);
    let lost = relay.stats.lost.load(Ordering::Relaxed) as usize;
    let run = relay.stats.longest_loss_run.load(Ordering::Relaxed) as usize;
    let (blocks, shift) = blocks(&want, &got, BLOCK);
    let gaps = blocks.iter().filter(|&&b| b == Block::Gap).count();
    let touched = blocks.iter().filter(|&&b| b == Block::Touched).count();
    let gap = longest_gap(&blocks);
    // Lost packets before the first that arrived shift the recording instead of leaving a gap.
    assert!(lost >= 20, "5 % of 800 packets: {lost}");
    assert!(
        gaps <= lost && gaps + 5 >= lost,
        "{gaps} concealed blocks for {lost} lost datagrams"
    );
    assert!(
        gap <= run,
        "longest gap {gap} blocks, longest loss run {run}"
    );
    assert!(
        touched <= gaps,
        "only the block after a gap is faded in: {touched}"
    );
    let snr = snr_db(&want, &got, shift * BLOCK);
    assert!(log.contains(&format!(" {gaps} concealed")), "{log}");
    eprintln!(
        "5 % loss: {lost} datagrams lost, {gaps} blocks concealed, {touched} faded in, longest gap {gap} x 5 ms (longest loss run {run}), SNR {snr:.1} dB"
    );
}

/// With redundancy each datagram also carries the frame before it: a single lost datagram costs
/// nothing, and only runs of losses leave a gap (one block shorter than the run).
fn redundancy_at(loss: f64, seed: u64) -> (usize, usize, usize, usize, f64) {
    let net = Impairment {
        loss,
        delay: Duration::from_millis(2),
        ..Impairment::default()
    };
    let (want, got, relay, log) = through(net, seed, &["--redundancy"]);
    assert!(log.contains("pcm+redundancy"), "{log}");
    let lost = relay.stats.lost.load(Ordering::Relaxed) as usize;
    let run = relay.stats.longest_loss_run.load(Ordering::Relaxed) as usize;
    let (blocks, shift) = blocks(&want, &got, RED_BLOCK);
    let gaps = blocks.iter().filter(|&&b| b == Block::Gap).count();
    let gap = longest_gap(&blocks);
    assert!(
        gap < run.max(1),
        "longest gap {gap} blocks for a longest loss run of {run}"
    );
    let snr = snr_db(&want, &got, shift * RED_BLOCK);
    (lost, run, gaps, gap, snr)
}

#[test]
fn redundancy_leaves_no_gap_longer_than_one_frame_at_2_percent_loss() {
    let (lost, run, gaps, gap, snr) = redundancy_at(0.02, 3);
    assert!(lost >= 10, "2 % of 1240 datagrams: {lost}");
    assert!(gap <= 1, "longest gap {gap} frames");
    eprintln!(
        "redundancy, 2 % loss: {lost} datagrams lost (longest run {run}), {gaps} frames concealed, longest gap {gap} x 3.2 ms, SNR {snr:.1} dB"
    );
    let (lost, run, gaps, gap, snr) = redundancy_at(0.05, 4);
    eprintln!(
        "redundancy, 5 % loss: {lost} datagrams lost (longest run {run}), {gaps} frames concealed, longest gap {gap} x 3.2 ms, SNR {snr:.1} dB"
    );
}

/// A chord through the relay with Opus at `kbps` (a lossy codec is judged on music-like
/// material, not noise).
fn opus_through(down: Impairment, seed: u64, kbps: &str) -> (Vec<i16>, Vec<i16>, Relay, String) {
    through_with(
        write_chord_wav,
        down,
        seed,
        &["--codec", "opus", "--bitrate", kbps],
    )
}

/// Blocks (5 ms) whose energy falls more than `db` below the source's, after aligning by
/// `shift` frames. A lossy codec never matches the waveform, so gaps are judged by level, as a
/// listener hears them: 10 dB down is a dropout; 6 dB down is an audible dip.
fn dropouts(want: &[i16], got: &[i16], shift: usize, db: f64) -> Vec<bool> {
    got.chunks(BLOCK)
        .enumerate()
        .map(|(i, g)| {
            let at = i * BLOCK + shift * 2;
            let Some(w) = want.get(at..at + g.len()) else {
                return false;
            };
            let e = |x: &[i16]| x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
            e(g) < e(w) / 10f64.powf(db / 10.0)
        })
        .collect()
}

fn longest_run(flags: &[bool]) -> usize {
    flags.split(|&f| !f).map(<[bool]>::len).max().unwrap_or(0)
}

#[test]
fn opus_at_5_percent_loss_and_20_ms_jitter_has_no_gap_longer_than_a_frame() {
    let net = Impairment {
        loss: 0.05,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(20),
        ..Impairment::default()
    };
    for kbps in ["128", "32"] {
        let (want, got, relay, log) = opus_through(net, 21, kbps);
        assert!(log.contains("opus"), "{log}");
        let lost = relay.stats.lost.load(Ordering::Relaxed);
        let run = relay.stats.longest_loss_run.load(Ordering::Relaxed);
        assert!(lost >= 20, "{lost}");
        // The recording starts at the first packet that arrived, behind the codec's delay.
        let (snr, shift) = aligned_snr(&want, &got, 2, 5 * 240 + 700);
        let drops = dropouts(&want, &got, shift, 10.0);
        let dips = dropouts(&want, &got, shift, 6.0);
        let longest = longest_run(&drops);
        let recovered = log
            .split(" recovered")
            .next()
            .and_then(|s| s.rsplit(", ").next())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let where_: Vec<usize> = drops
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| d.then_some(i))
            .collect();
        assert!(
            longest <= 1,
            "{kbps} kb/s: a dropout of {longest} blocks (run {run}, snr {snr:.1}, shift {shift}) at {where_:?}\n{log}"
        );
        assert!(snr > 5.0, "{kbps} kb/s: SNR {snr:.1} dB");
        eprintln!(
            "opus {kbps} kb/s, 5 % loss + 20 ms jitter: {lost} lost (longest run {run}), {recovered} recovered by FEC, {} blocks 10 dB down (longest run {longest}), {} blocks 6 dB down, SNR {snr:.1} dB (aligned at {shift} frames)",
            drops.iter().filter(|&&d| d).count(),
            dips.iter().filter(|&&d| d).count()
        );
    }
}
