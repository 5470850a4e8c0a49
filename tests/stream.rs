//! Streaming through the real binary over 127.0.0.1: WAV in, WAV out, in every security mode,
//! and recordings finalised on signals.

mod common;
use common::*;

fn round_trip(extra_server_args: &[&str]) {
    let sb = Sandbox::new();
    let input = sb.path("in.wav");
    let want = write_test_wav(&input, 1.5, 48_000, 2);
    let port = free_port().to_string();
    let mut server_args = vec!["-d", "wav:in.wav", "-u", &port, "-p", "s3cret"];
    server_args.extend_from_slice(extra_server_args);
    let mut server = sb.spawn(&server_args);
    server.wait_for("listening on", SECS(10));
    let mut client = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-p",
        "s3cret",
        "-d",
        "wav:out.wav",
    ]);
    let c = client.wait_timeout(SECS(20));
    let s = server.wait_timeout(SECS(10));
    assert!(c.success(), "client: {c}\n{}", client.stderr());
    assert!(s.success(), "server: {s}\n{}", server.stderr());
    let (spec, got) = read_wav(&sb.path("out.wav"));
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 2, 16)
    );
    assert_sample_exact(&want, &got);
}

#[test]
fn wav_arrives_sample_exact_encrypted() {
    round_trip(&[]);
}

#[test]
fn wav_arrives_sample_exact_integrity_only() {
    round_trip(&["--no-encryption", "-i"]);
}

#[test]
fn wav_arrives_sample_exact_plain() {
    round_trip(&["--no_encryption"]);
}

#[test]
fn mono_44k1_wav_keeps_its_format() {
    let sb = Sandbox::new();
    let want = write_test_wav(&sb.path("in.wav"), 0.7, 44_100, 1);
    let port = free_port().to_string();
    let mut server = sb.spawn(&["-d", "wav:in.wav", "--udp_port", &port]);
    server.wait_for("listening on", SECS(10));
    let mut client = sb.spawn(&[
        "--client",
        "--server_address",
        "localhost",
        "--port",
        &port,
        "--device_id",
        "wav:out.wav",
    ]);
    assert!(
        client.wait_timeout(SECS(20)).success(),
        "{}",
        client.stderr()
    );
    assert!(
        server.wait_timeout(SECS(10)).success(),
        "{}",
        server.stderr()
    );
    let (spec, got) = read_wav(&sb.path("out.wav"));
    assert_eq!((spec.sample_rate, spec.channels), (44_100, 1));
    assert_sample_exact(&want, &got);
}

fn recording_survives(sig: &str) {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut server = sb.spawn(&["-d", "tone:1000", "-u", &port]);
    server.wait_for("listening on", SECS(10));
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &port, "-d", "wav:rec.wav"]);
    client.wait_for("connected to", SECS(10));
    // Record for a while: wait until the file has grown past its header by a good margin.
    let deadline = std::time::Instant::now() + SECS(10);
    while std::fs::metadata(sb.path("rec.wav"))
        .map(|m| m.len())
        .unwrap_or(0)
        < 48_000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "recording did not grow:\n{}",
            client.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    client.signal(sig);
    let status = client.wait_timeout(SECS(10));
    assert!(
        status.success(),
        "client after SIG{sig}: {status}\n{}",
        client.stderr()
    );
    let (spec, got) = read_wav(&sb.path("rec.wav"));
    assert_eq!(spec.channels, 2);
    assert!(got.len() >= 24_000, "only {} samples", got.len());
    // The tone is there: a 1 kHz sine at -6 dBFS peaks near 16384.
    let peak = got.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!((15_000..=17_000).contains(&peak), "peak {peak}");
    server.signal("TERM");
    assert!(
        server.wait_timeout(SECS(10)).success(),
        "{}",
        server.stderr()
    );
}

#[test]
fn sigint_finalises_the_recording() {
    recording_survives("INT");
}

#[test]
fn sigterm_finalises_the_recording() {
    recording_survives("TERM");
}
