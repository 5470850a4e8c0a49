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

#[test]
fn a_sound_server_restart_loses_neither_process_nor_session() {
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let mut pw = PipeWire::start_with_lasting_sinks(&sb);
    let mut tone = pw.play_tone_native("sinkA", 1_000.0, 60.0);
    let port = free_port().to_string();
    let mut server = pw.echowarp(&sb, &["-d", "micA", "-u", &port]);
    server.wait_for("listening on", SECS(15));
    let mut client = pw.echowarp(
        &sb,
        &["-c", "-a", "127.0.0.1", "-u", &port, "-d", "speakerB"],
    );
    client.wait_for("connected to", SECS(15));
    std::thread::sleep(SECS(3));

    let lines = |p: &Proc| p.stderr().lines().count();
    let before = (lines(&server), lines(&client));
    pw.kill_pulse();
    let down_from = Instant::now();
    let ticks = (cpu_ticks(server.pid()), cpu_ticks(client.pid()));
    std::thread::sleep(SECS(2));
    let used = (
        (cpu_ticks(server.pid()) - ticks.0) as f64 / ticks_per_second(),
        (cpu_ticks(client.pid()) - ticks.1) as f64 / ticks_per_second(),
    );
    let down_for = down_from.elapsed().as_secs_f64();
    pw.start_pulse();
    let rec = sb.path("after.raw");
    let mut recorder = pw.record_native("sinkB", &rec);
    std::thread::sleep(SECS(7));
    let _ = recorder.kill();
    let _ = recorder.wait();

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
    // Within 3 s of the sound server's return the tone is back, at its pitch: the last 4 s of
    // the recording hold it.
    let got = samples(&rec);
    let tail = &got[got.len().saturating_sub(4 * 48_000)..];
    let (freq, level, loud, _) = analyse(tail, 48_000);
    assert!(
        loud > 2 * 48_000 && (freq - 1_000.0).abs() < PITCH_TOLERANCE_HZ && level > -15.0,
        "no tone after the restart ({freq:.1} Hz, {level:.1} dBFS, {loud} samples):\nserver:\n{}\nclient:\n{}",
        server.stderr(),
        client.stderr()
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
    let _ = tone.kill();
    let _ = tone.wait();
}
