//! The real Windows binary (`x86_64-pc-windows-gnu`, cross-built) under Wine, against the Linux
//! binary over 127.0.0.1 (issue 16). Built only with the feature `wine-tests`, which
//! scripts/test.sh turns on after building the exe; see tests/common/wine.rs for what it needs.
//!
//! Needs: Wine, the cross-built exe (`ECHOWARP_WINDOWS_EXE`) and, for the device tests,
//! PipeWire as tests/devices.rs.

mod common;
use common::wine::{win_path, Wine};
use common::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn version_help_and_bad_usage() {
    let w = Wine::new();
    let (code, out, err) = w.run(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("echowarp {VERSION}").as_str()),
        "{err}"
    );

    let (code, out, err) = w.run(&["--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--server-address") && out.contains("Exit status"),
        "{out}"
    );

    let (code, _, err) = w.run(&["--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );

    let (code, _, err) = w.run(&["-c", "-d", "null"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a client needs the server's address"), "{err}");

    // No virtual cable installed: --virtual-mic says which to get, and exits 1.
    let (code, _, err) = w.run(&["-c", "-a", "127.0.0.1", "--virtual-mic"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no virtual cable to play into: install VB-CABLE"),
        "{err}"
    );
}

/// The server's flags for each security mode, with the word its log line uses.
const MODES: [(&[&str], &str); 3] = [
    (&[], "encrypted"),
    (&["--no-encryption", "-i"], "integrity"),
    (&["--no-encryption"], "plain"),
];

/// Streams a WAV from one side to the other and checks the recording sample for sample.
fn wav_crosses(w: &Wine, windows_server: bool, mode: &[&str], word: &str) {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let src = w.path("in.wav");
    let rec = w.path(&format!(
        "rec-{}.wav",
        if windows_server { "linux" } else { "win" }
    ));
    let _ = std::fs::remove_file(&rec);
    let want = write_test_wav(&src, 1.5, 48_000, 2);
    let (src_arg, rec_arg) = if windows_server {
        (
            format!("wav:{}", win_path(&src)),
            format!("wav:{}", rec.display()),
        )
    } else {
        (
            format!("wav:{}", src.display()),
            format!("wav:{}", win_path(&rec)),
        )
    };
    let mut server_args = vec!["-u", &port, "-p", "s3cret", "-d", &src_arg];
    server_args.extend_from_slice(mode);
    let client_args = [
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-p",
        "s3cret",
        "-d",
        &rec_arg,
    ];
    let (mut server, mut client) = if windows_server {
        let mut s = w.spawn(&server_args);
        s.wait_for("listening on", SECS(30));
        (s, sb.spawn(&client_args))
    } else {
        let mut s = sb.spawn(&server_args);
        s.wait_for("listening on", SECS(30));
        (s, w.spawn(&client_args))
    };
    let status = client.wait_timeout(SECS(60));
    assert!(status.success(), "client: {status}\n{}", client.stderr());
    let status = server.wait_timeout(SECS(30));
    assert!(status.success(), "server: {status}\n{}", server.stderr());
    assert!(
        server.stderr().contains(&format!(", {word} (")),
        "the server did not run {word}:\n{}",
        server.stderr()
    );
    let (spec, got) = read_wav(&rec);
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 2));
    assert_sample_exact(&want, &got);
}

#[test]
fn a_wav_crosses_sample_exact_from_windows_to_linux_in_every_mode() {
    let w = Wine::new();
    for (mode, word) in MODES {
        wav_crosses(&w, true, mode, word);
    }
}

#[test]
fn a_wav_crosses_sample_exact_from_linux_to_windows_in_every_mode() {
    let w = Wine::new();
    for (mode, word) in MODES {
        wav_crosses(&w, false, mode, word);
    }
}

/// One connection attempt of the Windows client; returns its exit code and stderr.
fn windows_attempt(w: &Wine, port: &str, password: &str) -> (i32, String) {
    let (code, _, err) = w.run(&attempt_args(port, password));
    (code, err)
}

#[test]
fn a_windows_server_refuses_wrong_passwords_bans_and_keeps_its_list_in_appdata() {
    let w = Wine::new();
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut server = w.spawn(&["-u", &port, "-p", "right", "-d", "tone:440", "-r", "2"]);
    server.wait_for("listening on", SECS(30));
    assert_two_failures_ban(|password| one_attempt(&sb, &port, password));
    server.interrupt();

    let list = w.appdata().join("echowarp/data/echowarp_ban_list.txt");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    assert!(text.lines().any(|l| l.trim() == "127.0.0.1"), "{text}");
    let (code, out, err) = w.run(&["--bans"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.trim() == "127.0.0.1"), "{out}");
}

#[test]
fn a_windows_client_gets_401_and_then_403_from_a_linux_server() {
    let w = Wine::new();
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut server = sb.spawn(&["-u", &port, "-p", "right", "-d", "tone:440", "-r", "2"]);
    server.wait_for("listening on", SECS(15));
    assert_two_failures_ban(|password| windows_attempt(&w, &port, password));
}

#[test]
fn the_profile_lives_in_appdata_and_is_read_back() {
    let w = Wine::new();
    let (code, _, err) = w.run(&[
        "-u",
        "4999",
        "-p",
        "letmein",
        "--save-config",
        "--show-config",
    ]);
    assert_eq!(code, 0, "{err}");
    let path = w.appdata().join("echowarp/config/profile.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{err}", path.display()));
    assert!(text.contains("port = 4999"), "{text}");
    assert!(
        err.contains(r"AppData\Roaming\echowarp\config\profile.toml"),
        "the saved path is not shown as Windows' own:\n{err}"
    );
    // Read back with no flags: the saved settings are the effective ones.
    let (code, out, err) = w.run(&["--show-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("port = 4999") && out.contains("password = \"letmein\""),
        "{out}"
    );
}

#[test]
fn ctrl_c_stops_a_windows_client_and_its_recording_is_whole() {
    let w = Wine::new();
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let src = sb.path("long.wav");
    write_test_wav(&src, 30.0, 48_000, 2);
    let src_arg = format!("wav:{}", src.display());
    let mut server = sb.spawn(&["-u", &port, "-d", &src_arg]);
    server.wait_for("listening on", SECS(15));
    let rec = w.path("rec.wav");
    let rec_arg = format!("wav:{}", win_path(&rec));
    let mut client = w.spawn(&["-c", "-a", "127.0.0.1", "-u", &port, "-d", &rec_arg]);
    client.wait_for("connected to", SECS(30));
    std::thread::sleep(SECS(2));
    // Wine turns SIGINT into the console's CTRL_C_EVENT for the Windows process.
    client.signal("INT");
    let status = client.wait_timeout(SECS(15));
    assert!(status.success(), "{status}\n{}", client.stderr());
    let (spec, got) = read_wav(&rec);
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 2));
    assert!(
        got.len() >= 48_000 * 2,
        "only {} samples were recorded before Ctrl-C",
        got.len()
    );
}

/// A 1 kHz tone through real devices between the two platforms, in the test's PipeWire
/// session: Windows reaches the sinks through WASAPI (winepulse), Linux through ALSA's pulse
/// plug-in. With `windows_captures`, the Windows server captures sinkA's monitor and a Linux
/// client plays into sinkB; else a Linux server captures it and the Windows client plays into a
/// sink named as a game host's VB-Audio cable, picked by a part of its name as a user would.
/// Returns the tone as recorded from the played sink's monitor: (frequency, level dBFS, loud
/// samples).
fn tone_across(windows_captures: bool) -> (f64, f64, usize) {
    use common::pipewire::*;
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let pw = PipeWire::start(&sb);
    let w = Wine::new().with_env(&pw.env);
    let port = free_port().to_string();
    // A Windows client plays into a sink that looks like a game host's VB-Audio cable.
    let played = if windows_captures {
        "sinkB"
    } else {
        let ok = pw
            .cmd("pactl")
            .args([
                "load-module",
                "module-null-sink",
                "sink_name=cable",
                "rate=48000",
                "sink_properties=\"device.description='CABLE Input (VB-Audio Virtual Cable)'\"",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pactl");
        assert!(ok.success(), "could not make the cable");
        let (code, out, err) = w.run(&["--list-devices"]);
        assert_eq!(code, 0, "{err}");
        let row = out
            .lines()
            .find(|l| l.contains("CABLE Input (VB-Audio Virtual Cable)"))
            .unwrap_or_else(|| panic!("WASAPI does not list the cable:\n{out}"));
        assert!(row.ends_with("  *"), "the cable is not marked:\n{out}");
        assert!(
            out.contains("virtual cable (VB-Audio Virtual Cable): games record from CABLE Output"),
            "{out}"
        );
        "cable"
    };
    let rec = sb.path("rec.raw");
    let mut recorder = pw.record(&format!("{played}.monitor"), 48_000, &rec);
    // Silence keeps sinkA running: winepulse's capture of an idle (suspended) sink's monitor
    // delivers nothing at all, not zeros.
    let mut keep_running = pw.play_tone("sinkA", 0.0, 120.0);
    // WASAPI's names, as --list-devices shows them: "Monitor of sinkA ...", "sinkB ...".
    let server_args = ["-u", &port, "-d", "Monitor of sinkA"];
    let client_args = [
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-d",
        "CABLE Input",
        "--stats-json",
    ];
    let (mut server, mut client) = if windows_captures {
        let mut s = w.spawn(&server_args);
        s.wait_for("listening on", SECS(30));
        (
            s,
            pw.echowarp(
                &sb,
                &[
                    "-c",
                    "-a",
                    "127.0.0.1",
                    "-u",
                    &port,
                    "--audio-host",
                    "alsa",
                    "-d",
                    "speakerB",
                    "--stats-json",
                ],
            ),
        )
    } else {
        let mut s = pw.echowarp(&sb, &["--audio-host", "alsa", "-u", &port, "-d", "micA"]);
        s.wait_for("listening on", SECS(15));
        (s, w.spawn(&client_args))
    };
    client.wait_for("connected to", SECS(30));
    wait_until_played(&client, 3.0);
    let mut tone = pw.play_tone("sinkA", 1_000.0, 2.0);
    let _ = tone.wait();
    let deadline = std::time::Instant::now() + SECS(15);
    loop {
        let loud = samples(&rec)
            .iter()
            .filter(|x| x.unsigned_abs() > 2_000)
            .count();
        if loud > 48_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tone in {played}.monitor ({loud} loud samples)\nserver:\n{}\nclient:\n{}",
            server.stderr(),
            client.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let _ = recorder.kill();
    let _ = recorder.wait();
    client.interrupt();
    server.interrupt();
    let _ = keep_running.kill();
    let _ = keep_running.wait();
    let (freq, level, loud, _) = analyse(&samples(&rec), 48_000);
    eprintln!("{freq:.2} Hz, {level:.2} dBFS, {loud} loud samples");
    (freq, level, loud)
}

#[test]
fn a_windows_server_captures_a_tone_through_wasapi() {
    common::pipewire::assert_tone(tone_across(true));
}

#[test]
fn a_windows_client_plays_a_tone_through_wasapi() {
    common::pipewire::assert_tone(tone_across(false));
}

/// `echowarp.exe doctor` (issue 20) with WASAPI reaching a PipeWire session: the device runs,
/// the port is free; then the port taken by a Linux program, which blocks, with Windows' way
/// of finding who has it.
#[test]
fn the_windows_doctor_checks_wasapi_and_the_port() {
    use common::pipewire::*;
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let pw = PipeWire::start(&sb);
    let w = Wine::new().with_env(&pw.env);
    // winepulse captures nothing at all from an idle sink's monitor: something plays.
    let mut keep_running = pw.play_tone("sinkA", 0.0, 60.0);
    let port = free_port().to_string();
    let (code, out, err) = w.run(&["-u", &port, "-d", "Monitor of sinkA", "doctor"]);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}{err}");
    let said = |check: &str| {
        out.lines()
            .find(|l| l.get(6..).is_some_and(|r| r.starts_with(check)))
            .unwrap_or_else(|| panic!("no {check} line:\n{out}"))
            .to_owned()
    };
    assert!(
        said("audio host").starts_with("ok    audio host     WASAPI (auto): "),
        "{out}"
    );
    assert!(said("device").contains("delivers audio (48000 Hz"), "{out}");
    assert!(
        said("port").contains("is free, and TCP and UDP reach it"),
        "{out}"
    );
    // Toasts need the Start-menu shortcut the MSI makes; this exe was not installed.
    assert!(said("notifications").starts_with("warn"), "{out}");
    assert!(said("tray").starts_with("ok"), "{out}");
    assert!(out.ends_with("nothing blocks streaming\n"), "{out}");

    let taken = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind");
    let taken_port = taken.local_addr().expect("addr").port().to_string();
    let (code, out, err) = w.run(&["-u", &taken_port, "-d", "Monitor of sinkA", "doctor"]);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("FAIL  port           {taken_port} is taken"))
            && out.contains(&format!("fix: netstat -ano | findstr :{taken_port}")),
        "{out}"
    );
    let _ = keep_running.kill();
    let _ = keep_running.wait();
}

/// pipewire-pulse restarted under a Windows server and client (issue 22): winepulse's streams
/// die with it, on both sides at once. The sinks are PipeWire's own nodes (they outlive the
/// restart, as a desktop's devices do); the tone is played into sink A and recorded from sink B
/// with PipeWire's own tools. Both processes live on, quietly and cheaply, the client in its
/// session and at about its latency, and the tone is back in sink B.
#[test]
fn a_restart_of_pipewire_pulse_under_windows_server_and_client_is_survived() {
    use common::pipewire::*;
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let mut pw = PipeWire::start_with_lasting_sinks(&sb);
    let w = Wine::new().with_env(&pw.env);
    let _tone = pw.play_tone_native("sinkA", 1_000.0);
    let port = free_port().to_string();
    let mut server = w.spawn(&["-u", &port, "-d", "Monitor of sinkA", "--stats-json"]);
    server.wait_for("listening on", SECS(30));
    let mut client = w.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-d",
        "sinkB",
        "--stats-json",
    ]);
    client.wait_for("connected to", SECS(30));
    wait_until_played(&client, 2.0);

    let lines = |p: &Proc| p.stderr().lines().count();
    // Under Wine streaming itself costs some CPU (each of its system calls is a round trip to
    // wineserver): what a side may use while its device is gone is measured against that.
    let cpu = (cpu_seconds(server.pid()), cpu_seconds(client.pid()));
    let from = std::time::Instant::now();
    std::thread::sleep(SECS(2));
    let streaming = [
        (cpu_seconds(server.pid()) - cpu.0) / from.elapsed().as_secs_f64(),
        (cpu_seconds(client.pid()) - cpu.1) / from.elapsed().as_secs_f64(),
    ];
    let latency = |p: &Proc| {
        p.stdout()
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["latency_ms"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let latency_before = latency(&client);
    let before = (lines(&server), lines(&client));
    pw.kill_pulse();
    let cpu = (cpu_seconds(server.pid()), cpu_seconds(client.pid()));
    let down_from = std::time::Instant::now();
    std::thread::sleep(SECS(2));
    let used = [
        cpu_seconds(server.pid()) - cpu.0,
        cpu_seconds(client.pid()) - cpu.1,
    ];
    let down_for = down_from.elapsed().as_secs_f64();
    pw.start_pulse();
    let rec = sb.path("after.raw");
    let mut recorder = pw.record_native("sinkB", &rec);
    std::thread::sleep(SECS(8));
    let _ = recorder.kill();
    let _ = recorder.wait();
    let said = format!("server:\n{}\nclient:\n{}", server.stderr(), client.stderr());
    let after = (lines(&server), lines(&client));

    let got = samples(&rec);
    let back_after = got
        .chunks(960)
        .position(|c| c.len() == 960 && c.iter().filter(|s| s.unsigned_abs() > 4_000).count() > 200)
        .map(|i| i as f64 * 0.02);
    let latency_after = latency(&client);
    eprintln!(
        "the tone was back {back_after:?} s after pipewire-pulse answered; CPU streaming: \
         server {:.1} %, client {:.1} %; while down: server {:.1} %, client {:.1} %; lines: \
         server {}, client {}; the client's latency {latency_before:.0} ms before, \
         {latency_after:.0} ms after",
        100.0 * streaming[0],
        100.0 * streaming[1],
        100.0 * used[0] / down_for,
        100.0 * used[1] / down_for,
        after.0 - before.0,
        after.1 - before.1
    );
    eprintln!("{said}");
    for (side, p) in [("server", &mut server), ("client", &mut client)] {
        assert!(
            p.child.try_wait().expect("try_wait").is_none(),
            "the Windows {side} exited on a restart of pipewire-pulse:\n{said}"
        );
    }
    for ((side, cpu), streaming) in ["server", "client"].into_iter().zip(used).zip(streaming) {
        assert!(
            cpu / down_for < streaming + 0.05,
            "the Windows {side} used {:.0} % of a core while pipewire-pulse was down, {:.0} % \
             while it streamed",
            100.0 * cpu / down_for,
            100.0 * streaming
        );
    }
    for (side, n) in [
        ("server", after.0 - before.0),
        ("client", after.1 - before.1),
    ] {
        assert!(
            n <= 10,
            "the Windows {side} wrote {n} lines for one fault:\n{said}"
        );
    }
    assert_eq!(
        client.stderr().matches("connected to").count(),
        1,
        "the client kept its session:\n{said}"
    );
    // The client's playback fails with an error and is reported lost; winepulse's capture
    // stops without one, and is only found lost when it stays silent for 2 s (on a busy
    // machine it can resume before that): the server must end `ok` either way.
    for (side, p, must_see_loss) in [("server", &server, false), ("client", &client, true)] {
        let states = device_states(p);
        assert!(
            (!must_see_loss || states.iter().any(|s| s != "ok"))
                && states.last().is_some_and(|s| s == "ok"),
            "the Windows {side}'s device states: {states:?}\n{said}"
        );
    }
    // The capture under winepulse stops without an error and is found silent after 2 s: the
    // server's positions skip what it did not deliver, so the client starts afresh rather than
    // take every later packet as 2 s late (it had grown its buffer fourfold, to ~330 ms).
    assert!(
        latency_after < latency_before + 100.0,
        "the client's latency went from {latency_before:.0} ms to {latency_after:.0} ms:\n{said}"
    );
    let tail = &got[got.len().saturating_sub(3 * 48_000)..];
    let (freq, level, _, _) = analyse(tail, 48_000);
    assert!(
        back_after.is_some_and(|t| t <= 3.0)
            && (freq - 1_000.0).abs() < PITCH_TOLERANCE_HZ
            && level > -15.0,
        "after the restart sink B got {freq:.1} Hz at {level:.1} dBFS, loud from {back_after:?} s:\n{said}"
    );
    client.interrupt();
    server.interrupt();
}

/// An X display of its own (Xvfb) for one test; killed on drop.
struct Display {
    name: String,
    xvfb: std::process::Child,
}

impl Display {
    fn start() -> Self {
        // Numbers apart from tests/tray.rs's (100 and up); each test of this process its own
        // (two tests sharing one display click into each other's menus), and one whose lock
        // file shows it taken is passed over.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(n < 60, "no free X display between :20 and :79");
            let number = 20 + (std::process::id() + n) % 60;
            if std::path::Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            let name = format!(":{number}");
            let mut xvfb = std::process::Command::new("Xvfb")
                .args([&name, "-screen", "0", "800x600x24", "-nolisten", "tcp"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("Xvfb is installed by the test command");
            let deadline = std::time::Instant::now() + SECS(10);
            loop {
                // Ours, not another's: it must still run once the display answers.
                if let Ok(Some(_)) = xvfb.try_wait() {
                    break;
                }
                let answers = std::process::Command::new("xdpyinfo")
                    .env("DISPLAY", &name)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if answers && xvfb.try_wait().is_ok_and(|s| s.is_none()) {
                    return Self { name, xvfb };
                }
                assert!(std::time::Instant::now() < deadline, "Xvfb did not start");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    /// Runs xdotool on this display (the pointer, clicks, keys), asserting it worked.
    fn xdotool(&self, args: &[&str]) {
        let ok = std::process::Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.name)
            .status()
            .expect("xdotool");
        assert!(ok.success(), "xdotool {args:?}");
    }

    /// A screenshot under cargo's temporary folder for tests (docs/ takes its copies from there).
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tray-screenshots");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(name);
        let ok = std::process::Command::new("import")
            .args(["-window", "root"])
            .arg(&path)
            .env("DISPLAY", &self.name)
            .status()
            .expect("import");
        assert!(ok.success(), "screenshot failed");
        path
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}

/// A screenshot's pixels as RGB rows: (width, bytes).
fn rgb(png_path: &std::path::Path) -> (u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).expect("screenshot"),
    ));
    // ImageMagick writes a palette when the screen has few colours: expand it to RGB.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("png");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot ({:?})", info.color_type);
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|px| px[..3].to_vec())
        .collect();
    (info.width, rgb)
}

/// Pixels of a screenshot's region that are strongly coloured (an icon, not a grey taskbar).
fn coloured_pixels(
    png_path: &std::path::Path,
    x: std::ops::Range<u32>,
    y: std::ops::Range<u32>,
) -> usize {
    let (width, px) = rgb(png_path);
    let mut n = 0;
    for row in y {
        for col in x.clone() {
            let i = (row * width + col) as usize * 3;
            let p = &px[i..i + 3];
            let (hi, lo) = (p.iter().max().unwrap_or(&0), p.iter().min().unwrap_or(&0));
            if hi - lo > 80 {
                n += 1;
            }
        }
    }
    n
}

/// Pixels of the notification area (the taskbar's right end) unlike the taskbar itself (its
/// colour taken left of it, where nothing is drawn).
fn notification_area_pixels(png_path: &std::path::Path) -> usize {
    let (width, px) = rgb(png_path);
    let at = |col: u32, row: u32| {
        let i = (row * width + col) as usize * 3;
        [px[i], px[i + 1], px[i + 2]]
    };
    let taskbar = at(700, 590);
    (582..600)
        .flat_map(|row| (740..800).map(move |col| (col, row)))
        .filter(|&(col, row)| {
            at(col, row)
                .iter()
                .zip(taskbar)
                .any(|(a, b)| a.abs_diff(b) > 40)
        })
        .count()
}

/// Pixels of a region that differ between two screenshots of one screen.
fn changed_pixels(
    before: &std::path::Path,
    after: &std::path::Path,
    x: std::ops::Range<u32>,
    y: std::ops::Range<u32>,
) -> usize {
    let ((width, a), (_, b)) = (rgb(before), rgb(after));
    y.flat_map(|row| x.clone().map(move |col| (row * width + col) as usize * 3))
        .filter(|&i| a[i..i + 3] != b[i..i + 3])
        .count()
}

/// The bottom-left corner (left-most column, lowest row) of what changed in a region.
fn changed_corner(
    before: &std::path::Path,
    after: &std::path::Path,
    x: std::ops::Range<u32>,
    y: std::ops::Range<u32>,
) -> (u32, u32) {
    let ((width, a), (_, b)) = (rgb(before), rgb(after));
    let changed: Vec<(u32, u32)> = y
        .flat_map(|row| x.clone().map(move |col| (col, row)))
        .filter(|&(col, row)| {
            let i = (row * width + col) as usize * 3;
            a[i..i + 3] != b[i..i + 3]
        })
        .collect();
    let left = changed
        .iter()
        .map(|p| p.0)
        .min()
        .expect("something changed");
    let bottom = changed
        .iter()
        .map(|p| p.1)
        .max()
        .expect("something changed");
    (left, bottom)
}

/// The Run value start at login writes, if any.
fn run_value(w: &Wine) -> Option<String> {
    let out = w
        .cmd("wine")
        .args([
            "reg",
            "query",
            r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
            "/v",
            "echowarp",
        ])
        .output()
        .expect("wine reg");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("echowarp"))
        .and_then(|rest| rest.trim().strip_prefix("REG_SZ"))
        .map(|v| v.trim().to_owned())
}

/// Waits (20 s at most) until the Run value is there, or gone.
fn wait_for_run_value(w: &Wine, tray: &Proc, present: bool) {
    let deadline = std::time::Instant::now() + SECS(20);
    while run_value(w).is_some() != present {
        assert!(
            std::time::Instant::now() < deadline,
            "the Run value is {}:\n{}",
            if present {
                "not written"
            } else {
                "still there"
            },
            tray.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The tray under Wine's own desktop (`explorer /desktop`, whose taskbar has a notification
/// area; Wine relays clicks there, where its XEmbed icons in trayer get none). Checked: the
/// icon; start at login from the profile (the tray applies `autostart` at start and on every
/// edit of the file); a toast that cannot be shown (WinRT is missing) logged once while the
/// tray carries on; a click on the icon opens the menu (Wine 8's `Shell_NotifyIconGetRect` is
/// a stub: src/ui/tray/click.rs), and its last item, picked from the keyboard, quits.
#[test]
fn the_windows_tray_docks_opens_its_menu_writes_start_at_login_and_survives_without_toasts() {
    let display = Display::start();
    let w = Wine::new().with_env(&[("DISPLAY".to_owned(), display.name.clone())]);
    let config = w.appdata().join("echowarp/config");
    std::fs::create_dir_all(&config).expect("mkdir");
    let profile = config.join("profile.toml");
    // A device that does not exist: the stream fails at once and the tray tells the desktop.
    std::fs::write(&profile, "autostart = true\ndevice = \"no-such-device\"\n").expect("profile");
    let exe = r"C:\Program Files\EchoWarp\echowarp.exe";
    let installed = w.prefix.join("drive_c/Program Files/EchoWarp");
    std::fs::create_dir_all(&installed).expect("mkdir");
    for f in ["echowarp.exe", "bcryptprimitives.dll"] {
        std::fs::copy(w.bin_dir().join(f), installed.join(f)).expect("install");
    }
    let mut c = w.cmd("wine");
    c.args(["explorer", "/desktop=EchoWarp,800x600", exe, "--tray"]);
    let mut tray = Proc::spawn(c, &["--tray"]);
    tray.wait_for("tray ready", SECS(60));
    tray.wait_for("no notification service", SECS(20));
    wait_for_run_value(&w, &tray, true);
    assert_eq!(
        run_value(&w).as_deref(),
        Some(format!("\"{exe}\" --tray").as_str())
    );

    // The notification area is the right end of the taskbar (y 580-600); the icon is the only
    // colour in it. Hovering shows the status line as the tooltip.
    std::thread::sleep(SECS(2));
    let shot = display.screenshot("windows-tray.png");
    let icon = coloured_pixels(&shot, 740..800, 582..600);
    assert!(
        icon > 40,
        "no icon in the notification area ({icon} coloured pixels)"
    );
    let _ = std::process::Command::new("xdotool")
        .args(["mousemove", "789", "590"])
        .env("DISPLAY", &display.name)
        .status();
    std::thread::sleep(SECS(2));
    display.screenshot("windows-tray-tooltip.png");

    // Start at login off in the profile: the value goes.
    std::fs::write(&profile, "autostart = false\ndevice = \"no-such-device\"\n").expect("profile");
    wait_for_run_value(&w, &tray, false);
    assert!(
        tray.child.try_wait().expect("try_wait").is_none(),
        "the tray exited:\n{}",
        tray.stderr()
    );
    let err = tray.stderr();
    assert_eq!(err.matches("no notification service").count(), 1, "{err}");

    // A click on the icon: the menu opens above it (the screen changes over the desktop, where
    // nothing else moves), and Up then Return picks its last item, Quit.
    // The pointer away first, so that no tooltip is in either picture.
    display.xdotool(&["mousemove", "400", "300"]);
    std::thread::sleep(SECS(2));
    let before = display.screenshot("windows-tray-before-click.png");
    display.xdotool(&["mousemove", "789", "590", "click", "1"]);
    std::thread::sleep(SECS(2));
    let menu = display.screenshot("windows-tray-menu.png");
    let opened = changed_pixels(&before, &menu, 500..800, 200..575);
    assert!(
        opened > 15000,
        "no menu above the icon after a click ({opened} pixels changed):\n{}",
        tray.stderr()
    );
    // Its last item, Quit, is the bottom row of what changed (the menu's bottom edge is at the
    // pointer). Keys do not reach a Wine menu here, the pointer does.
    let (left, bottom) = changed_corner(&before, &menu, 500..800, 200..595);
    let (x, y) = ((left + 20).to_string(), (bottom - 8).to_string());
    display.xdotool(&["mousemove", &x, &y]);
    std::thread::sleep(SECS(1));
    display.screenshot("windows-tray-quit.png");
    display.xdotool(&["click", "1"]);
    tray.wait_for("menu: Quit", SECS(10));
}

/// The connect dialog under Wine: picked from the tray's menu, an address and a password typed
/// in (Return moves on, Return connects), and the Windows tray becomes a Linux server's client
/// and streams; the profile keeps its lines.
#[test]
fn the_windows_tray_connect_dialog_takes_an_address_and_a_password_and_connects() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut server = sb.spawn(&["-u", &port, "-p", "s3cret w0rd", "-d", "tone:440"]);
    server.wait_for("server on", SECS(10));
    let display = Display::start();
    let w = Wine::new().with_env(&[("DISPLAY".to_owned(), display.name.clone())]);
    let config = w.appdata().join("echowarp/config");
    std::fs::create_dir_all(&config).expect("mkdir");
    let profile = config.join("profile.toml");
    std::fs::write(
        &profile,
        format!("# mine\nport = {port}\ndevice = \"null\"\nstart_streaming = false\n"),
    )
    .expect("profile");
    let installed = w.prefix.join("drive_c/EchoWarp");
    std::fs::create_dir_all(&installed).expect("mkdir");
    for f in ["echowarp.exe", "bcryptprimitives.dll"] {
        std::fs::copy(w.bin_dir().join(f), installed.join(f)).expect("install");
    }
    let mut c = w.cmd("wine");
    c.args([
        "explorer",
        "/desktop=EchoWarp,800x600",
        r"C:\EchoWarp\echowarp.exe",
        "--tray",
    ]);
    let mut tray = Proc::spawn(c, &["--tray"]);
    tray.wait_for("tray ready", SECS(60));
    display.xdotool(&["mousemove", "400", "300"]);
    // The icon docked in the notification area (the idle icon is grey: pixels unlike the
    // taskbar's), however busy the machine: then a click on it opens the menu, drawn once two
    // pictures of it agree.
    let deadline = std::time::Instant::now() + SECS(30);
    loop {
        let shot = display.screenshot("windows-tray-before-dialog.png");
        if notification_area_pixels(&shot) > 40 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no icon:\n{}",
            tray.stderr()
        );
        std::thread::sleep(SECS(1));
    }
    std::thread::sleep(SECS(1));
    let before = display.screenshot("windows-tray-before-dialog.png");
    display.xdotool(&["mousemove", "789", "590", "click", "1"]);
    let deadline = std::time::Instant::now() + SECS(20);
    let mut last = None;
    let (left, bottom) = loop {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let menu = display.screenshot("windows-tray-menu-for-dialog.png");
        if changed_pixels(&before, &menu, 500..800, 200..575) > 15000 {
            let corner = changed_corner(&before, &menu, 500..800, 200..595);
            if last == Some(corner) {
                break corner;
            }
            last = Some(corner);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no menu:\n{}",
            tray.stderr()
        );
    };
    // Rows are 17 px and separators 8: "Connect to a server…" is 8 rows and 2 separators
    // above Quit, the bottom row of what changed.
    let (x, y) = (
        (left + 20).to_string(),
        (bottom - 8 - 8 * 17 - 2 * 8).to_string(),
    );
    display.xdotool(&["mousemove", &x, &y, "click", "1"]);
    tray.wait_for("menu: AskServer", SECS(10));
    std::thread::sleep(SECS(2));
    // Without a window manager keys go where the pointer is: over the dialog, in the middle.
    display.xdotool(&["mousemove", "400", "300"]);
    display.xdotool(&["type", "--delay", "60", "127.0.0.1"]);
    display.xdotool(&["key", "Return"]);
    display.xdotool(&["type", "--delay", "60", "s3cret w0rd"]);
    std::thread::sleep(SECS(1));
    display.screenshot("windows-connect-dialog.png");
    display.xdotool(&["key", "Return"]);
    tray.wait_for("connected to", SECS(30));
    server.wait_for(" joined (session", SECS(10));
    let saved = std::fs::read_to_string(&profile).expect("profile");
    assert_profile_kept_with(
        &saved,
        &[
            "role = \"client\"",
            "server_address = \"127.0.0.1\"",
            "password = \"s3cret w0rd\"",
        ],
    );
    assert!(!tray.stderr().contains("s3cret"), "{}", tray.stderr());
    server.stop();
}

/// DLLs every Windows 10 and 11 has: the exe may import these and nothing else (no mingw
/// runtime such as libgcc_s, libwinpthread or libssp).
const SYSTEM_DLLS: &[&str] = &[
    "advapi32.dll",
    "bcrypt.dll",
    "bcryptprimitives.dll",
    "combase.dll",
    "comctl32.dll",
    "dwmapi.dll",
    "gdi32.dll",
    "imm32.dll",
    // The IP Helper API (the interfaces mDNS announces on), in System32 since Windows 2000.
    "iphlpapi.dll",
    "kernel32.dll",
    "ktmw32.dll",
    "mmdevapi.dll",
    "msvcrt.dll",
    "ntdll.dll",
    "ole32.dll",
    "oleaut32.dll",
    "propsys.dll",
    "rpcrt4.dll",
    "shell32.dll",
    "shlwapi.dll",
    "user32.dll",
    "userenv.dll",
    "uxtheme.dll",
    "winmm.dll",
    "ws2_32.dll",
];

#[test]
fn the_exe_imports_system_dlls_only() {
    let out = std::process::Command::new("x86_64-w64-mingw32-objdump")
        .arg("-p")
        .arg(common::wine::exe())
        .output()
        .expect("objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let dlls: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DLL Name: "))
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(dlls.iter().any(|d| d == "kernel32.dll"), "{text}");
    for dll in &dlls {
        assert!(
            SYSTEM_DLLS.contains(&dll.as_str()) || dll.starts_with("api-ms-win-"),
            "echowarp.exe imports {dll}, which Windows does not ship"
        );
    }
}

/// `wine reg query` of the key that registers the toasts' AppUserModelID.
fn aumid_key(w: &Wine) -> std::process::Output {
    w.cmd("wine")
        .args([
            "reg",
            "query",
            r"HKLM\Software\Classes\AppUserModelId\EchoWarp.EchoWarp",
        ])
        .output()
        .expect("wine reg")
}

/// Runs `bash scripts/package-windows.sh OUT` on the exe under test; returns (zip, msi).
fn package(out: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let run = std::process::Command::new("bash")
        .arg("scripts/package-windows.sh")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ECHOWARP_WINDOWS_EXE", common::wine::exe())
        .output()
        .expect("package-windows.sh");
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut lines = text.lines().rev();
    let msi = std::path::PathBuf::from(lines.next().expect("msi path"));
    let zip = std::path::PathBuf::from(lines.next().expect("zip path"));
    (zip, msi)
}

#[test]
fn the_msi_installs_runs_and_uninstalls_without_a_trace() {
    let w = Wine::new();
    let (zip, msi) = package(&w.path("pkg"));
    assert!(zip.ends_with(format!("echowarp-{VERSION}-x86_64-windows.zip")));
    let listing = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-l"])
        .arg(&zip)
        .output()
        .expect("python3");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("echowarp/echowarp.exe"), "{listing}");
    assert!(!listing.to_ascii_lowercase().contains(".dll"), "{listing}");

    let msi_win = win_path(&msi);
    let status = w
        .cmd("wine")
        .args(["msiexec", "/i", &msi_win, "/qn", "ADDLOCAL=ALL"])
        .status()
        .expect("msiexec");
    assert!(status.success(), "msiexec /i: {status}");
    let folder = w.prefix.join("drive_c/Program Files/EchoWarp");
    assert!(folder.join("echowarp.exe").is_file(), "not installed");
    let shortcuts = |w: &Wine| -> Vec<std::path::PathBuf> {
        let out = std::process::Command::new("find")
            .arg(w.prefix.join("drive_c"))
            .args(["-iname", "EchoWarp.lnk"])
            .output()
            .expect("find");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(std::path::PathBuf::from)
            .collect()
    };
    assert_eq!(shortcuts(&w).len(), 1, "one Start-menu shortcut");
    let exe = r"C:\Program Files\EchoWarp\echowarp.exe";
    assert_eq!(
        run_value(&w).as_deref(),
        Some(format!("\"{exe}\" --tray").as_str())
    );
    let aumid = aumid_key(&w);
    assert!(
        String::from_utf8_lossy(&aumid.stdout).contains("DisplayName"),
        "the toasts' AppUserModelID is not registered"
    );

    // The installed program runs (with the test-only shim beside it for Wine 8, taken away
    // again before the uninstall).
    let shim = folder.join("bcryptprimitives.dll");
    std::fs::copy(w.bin_dir().join("bcryptprimitives.dll"), &shim).expect("shim");
    let out = w
        .cmd("wine")
        .args([exe, "--version"])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("echowarp {VERSION}")
    );
    std::fs::remove_file(&shim).expect("shim");

    let status = w
        .cmd("wine")
        .args(["msiexec", "/x", &msi_win, "/qn"])
        .status()
        .expect("msiexec");
    assert!(status.success(), "msiexec /x: {status}");
    assert!(!folder.exists(), "{} is left", folder.display());
    assert!(shortcuts(&w).is_empty(), "a shortcut is left");
    assert_eq!(run_value(&w), None, "the Run value is left");
    let aumid = aumid_key(&w);
    assert!(!aumid.status.success(), "the AppUserModelID key is left");
}
