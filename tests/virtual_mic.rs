//! The virtual microphone (issue 20, point 2) in a private PipeWire session: a client run with
//! `--virtual-mic` offers "EchoWarp Microphone", a recording from it holds the streamed tone,
//! and it is gone after the run, and after a killed run once EchoWarp starts again.
//!
//! Needs: PipeWire, WirePlumber, pipewire-pulse and pactl (scripts/test.sh installs them).

mod common;
use common::pipewire::*;
use common::*;

/// The node names of the session's sources.
fn sources(pw: &PipeWire) -> Vec<String> {
    let out = pw
        .cmd("pactl")
        .args(["list", "short", "sources"])
        .output()
        .expect("pactl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect()
}

fn mics(pw: &PipeWire) -> usize {
    sources(pw)
        .iter()
        .filter(|s| *s == "echowarp_microphone")
        .count()
}

#[test]
fn the_virtual_microphone_carries_the_stream_and_goes_with_the_run() {
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let pw = PipeWire::start(&sb);
    let port = free_port().to_string();
    let mut server = pw.echowarp(&sb, &["-u", &port, "-d", "tone:1000"]);
    server.wait_for("server on", SECS(15));
    let client_args = ["-c", "-a", "127.0.0.1", "-u", &port, "--virtual-mic"];
    let mut client = pw.echowarp(&sb, &client_args);
    client.wait_for("connected to", SECS(15));
    assert_eq!(mics(&pw), 1, "sources: {:?}", sources(&pw));
    let listing = pw
        .cmd("pactl")
        .args(["list", "sources"])
        .output()
        .expect("pactl");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("Description: EchoWarp Microphone\n"),
        "no source described as EchoWarp Microphone: {:?}",
        listing
            .lines()
            .filter(|l| l.contains("Description") || l.contains("Name:"))
            .collect::<Vec<_>>()
    );

    // Another program records from it, as a game or a call would.
    let rec = sb.path("mic.raw");
    let mut recorder = pw.record("echowarp_microphone", 48_000, &rec);
    std::thread::sleep(SECS(3));
    let _ = recorder.kill();
    let _ = recorder.wait();
    let (freq, level, loud, _) = analyse(&samples(&rec), 48_000);
    assert!(
        (freq - 1_000.0).abs() < PITCH_TOLERANCE_HZ && level > -20.0 && loud > 48_000,
        "the microphone holds {freq:.1} Hz at {level:.1} dBFS for {loud} samples:\n{}",
        client.stderr()
    );

    // A run that ends removes it.
    client.stop();
    assert_eq!(mics(&pw), 0, "left after the run: {:?}", sources(&pw));

    // A killed run leaves it; the next run removes it before making its own.
    let mut killed = pw.echowarp(&sb, &client_args);
    killed.wait_for("connected to", SECS(15));
    killed.signal("KILL");
    let _ = killed.wait_timeout(SECS(10));
    assert_eq!(mics(&pw), 1, "a killed run took its microphone with it");
    let mut again = pw.echowarp(&sb, &client_args);
    again.wait_for("connected to", SECS(15));
    assert!(again.stderr().contains("left behind"), "{}", again.stderr());
    assert_eq!(mics(&pw), 1, "sources: {:?}", sources(&pw));
    again.stop();
    assert_eq!(mics(&pw), 0, "sources: {:?}", sources(&pw));
    server.stop();
}
