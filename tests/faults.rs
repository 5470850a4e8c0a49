//! Devices that fail and come back: the sound server restarted under a running server and
//! client. The null sinks are PipeWire's own nodes (a desktop's devices outlive a restart of
//! pipewire-pulse); the server captures sink A's monitor and the client plays into sink B, both
//! through ALSA's pulse plug-in, whose streams die with pipewire-pulse. A tone is played into A
//! and recorded from B with PipeWire's own tools, which outlive it too.
//!
//! Needs: PipeWire, WirePlumber, pipewire-pulse, pw-cli and pw-cat, and the ALSA pulse plug-in
//! installed (the test starts a private session of its own); no sound card.

mod common;
use common::pipewire::*;
use common::*;
use std::time::Instant;

/// CPU time a process has used so far (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn ticks_per_second() -> f64 {
    // The kernel's USER_HZ; 100 on every Linux this runs on.
    100.0
}

/// What goes away for 2 s under a streaming server and client.
enum Fault {
    /// pipewire-pulse, as `systemctl --user restart pipewire-pulse` does.
    Pulse,
    /// The whole session (PipeWire, WirePlumber, pipewire-pulse), the sinks made again with
    /// the same names, as after a log-out's restart of the user's services.
    Session,
}

#[test]
fn a_restart_of_pipewire_pulse_loses_neither_process_nor_session() {
    survives(Fault::Pulse);
}

#[test]
fn a_restart_of_the_whole_sound_session_loses_neither_process_nor_session() {
    survives(Fault::Session);
}

/// Streams a tone from sink A's monitor into sink B, takes `fault` away for 2 s, and checks
/// that both sides lived through it quietly and cheaply, the client in the same session, and
/// that the tone is back in sink B.
fn survives(fault: Fault) {
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let mut pw = PipeWire::start_with_lasting_sinks(&sb);
    let tone = pw.play_tone_native("sinkA", 1_000.0);
    let port = free_port().to_string();
    let mut server = pw.echowarp(&sb, &["-d", "micA", "-u", &port, "--stats-json"]);
    server.wait_for("listening on", SECS(15));
    let mut client = pw.echowarp(
        &sb,
        &[
            "-c",
            "-a",
            "127.0.0.1",
            "-u",
            &port,
            "-d",
            "speakerB",
            "--stats-json",
        ],
    );
    client.wait_for("connected to", SECS(15));
    std::thread::sleep(SECS(3));

    let lines = |p: &Proc| p.stderr().lines().count();
    let before = (lines(&server), lines(&client));
    match fault {
        Fault::Pulse => pw.kill_pulse(),
        Fault::Session => pw.kill_all(),
    }
    let down_from = Instant::now();
    let ticks = (cpu_ticks(server.pid()), cpu_ticks(client.pid()));
    std::thread::sleep(SECS(2));
    let used = (
        (cpu_ticks(server.pid()) - ticks.0) as f64 / ticks_per_second(),
        (cpu_ticks(client.pid()) - ticks.1) as f64 / ticks_per_second(),
    );
    let down_for = down_from.elapsed().as_secs_f64();
    match fault {
        Fault::Pulse => pw.start_pulse(),
        Fault::Session => {
            pw.start_all();
            for sink in ["sinkA", "sinkB"] {
                pw.make_sink(sink);
            }
        }
    }
    // The recorder (PipeWire's own) starts once the session answers again, and is waited for
    // until it is linked: its stream is one more source output.
    let outputs = |pw: &PipeWire| {
        pw.cmd("pactl")
            .args(["list", "short", "source-outputs"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    let before_recording = outputs(&pw);
    let rec = sb.path("after.raw");
    let mut recorder = pw.record_native("sinkB", &rec);
    // What the server captures, to tell a silent source from a silent path when this fails.
    let source_rec = sb.path("source.raw");
    let mut source_recorder = pw.record_native("sinkA", &source_rec);
    let linked_by = Instant::now() + SECS(5);
    while outputs(&pw) <= before_recording && Instant::now() < linked_by {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(SECS(7));
    for r in [&mut recorder, &mut source_recorder] {
        let _ = r.kill();
        let _ = r.wait();
    }

    for (side, p) in [("server", &mut server), ("client", &mut client)] {
        assert!(
            p.child.try_wait().expect("try_wait").is_none(),
            "the {side} exited on a sound server restart:\n{}",
            p.stderr()
        );
    }
    for (side, cpu) in [("server", used.0), ("client", used.1)] {
        assert!(
            cpu / down_for < 0.05,
            "the {side} used {:.0} % of a core while the sound server was down",
            100.0 * cpu / down_for
        );
    }
    let after = (lines(&server), lines(&client));
    for (side, n, p) in [
        ("server", after.0 - before.0, &server),
        ("client", after.1 - before.1, &client),
    ] {
        assert!(
            n <= 10,
            "the {side} wrote {n} lines for one fault:\n{}",
            p.stderr()
        );
    }
    assert_eq!(
        client.stderr().matches("connected to").count(),
        1,
        "the client kept its session:\n{}",
        client.stderr()
    );
    // `--stats-json` showed the device away while it was, and back since.
    for (side, p) in [("server", &server), ("client", &client)] {
        let states: Vec<String> = p
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["device"].as_str().map(str::to_owned))
            .collect();
        assert!(
            states.iter().any(|s| s != "ok") && states.last().is_some_and(|s| s == "ok"),
            "the {side}'s device states: {states:?}"
        );
    }
    // Within 3 s of the sound server's return the tone is back, at its pitch: the last 4 s of
    // the recording hold it.
    let routes = |what: &str| {
        pw.cmd("pactl")
            .args(["list", "short", what])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let where_ = format!(
        "sinks:\n{}sink inputs:\n{}source outputs:\n{}",
        routes("sinks"),
        routes("sink-inputs"),
        routes("source-outputs")
    );
    let source = samples(&source_rec);
    let where_ = format!(
        "{where_}the source (sink A) meanwhile: {:?}; recorded {} s of sink B\nclient's last figures:\n{}",
        analyse(&source, 48_000),
        std::fs::metadata(&rec).map_or(0, |m| m.len()) / 4 / 48_000,
        client.stdout().lines().rev().take(2).collect::<Vec<_>>().join("\n")
    );
    let got = samples(&rec);
    // When the tone came back: the first of 20 ms loud throughout.
    let back_after = got
        .chunks(960)
        .position(|c| c.len() == 960 && c.iter().filter(|s| s.unsigned_abs() > 4_000).count() > 200)
        .map(|i| i as f64 * 0.02);
    eprintln!("the tone was back {back_after:?} s after the sound server answered");
    // Within 3 s of the device's return (and the 20 ms of this measure; measured 1.0 to 3.1 s
    // here, most of it pipewire-pulse settling: a stream opened in its first second fails at
    // its first callbacks).
    assert!(
        back_after.is_some_and(|t| t <= 3.5),
        "the tone was back {back_after:?} s after the sound server answered:\nserver:\n{}\nclient:\n{}",
        server.stderr(),
        client.stderr()
    );
    let tail = &got[got.len().saturating_sub(4 * 48_000)..];
    let (freq, level, loud, _) = analyse(tail, 48_000);
    assert!(
        loud > 2 * 48_000 && (freq - 1_000.0).abs() < PITCH_TOLERANCE_HZ && level > -15.0,
        "no tone after the restart ({freq:.1} Hz, {level:.1} dBFS, {loud} samples):\nserver:\n{}\nclient:\n{}\n{where_}",
        server.stderr(),
        client.stderr(),
    );
    eprintln!(
        "CPU while down: server {:.1} %, client {:.1} % of a core; lines: server {}, client {}",
        100.0 * used.0 / down_for,
        100.0 * used.1 / down_for,
        after.0 - before.0,
        after.1 - before.1
    );
    eprintln!("server:\n{}\nclient:\n{}", server.stderr(), client.stderr());
    server.stop();
    client.stop();
    drop(tone);
}
