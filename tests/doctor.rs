//! `echowarp doctor` (issue 20) on a machine set up for streaming: a private PipeWire session
//! with null sinks (tests/devices.rs), and on its D-Bus session a real notification service
//! (dunst, on an Xvfb display of its own). Then one thing at a time is broken, as a user's
//! machine breaks: no sound server, the port taken by another program, no notification
//! service; each time the doctor names it, and exits 1 when it blocks streaming.
//!
//! Needs: PipeWire, WirePlumber, pipewire-pulse, dbus-daemon, Xvfb and dunst (scripts/test.sh
//! installs them); no sound card.

mod common;
use common::pipewire::*;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Xvfb and dunst on the PipeWire session's bus; killed on drop.
struct Notices(Vec<Child>, String);

impl Notices {
    fn start(pw: &PipeWire) -> Self {
        let display = format!(":{}", 80 + std::process::id() % 20);
        let xvfb = Command::new("Xvfb")
            .args([&display, "-screen", "0", "320x240x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed by the test command");
        let mut me = Self(vec![xvfb], display.clone());
        let deadline = Instant::now() + SECS(10);
        while !Command::new("xdpyinfo")
            .args(["-display", &display])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "Xvfb did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let dunst = pw
            .cmd("dunst")
            .env("DISPLAY", &display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst is installed by the test command");
        me.0.push(dunst);
        let deadline = Instant::now() + SECS(10);
        while !pw
            .cmd("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        {
            assert!(
                Instant::now() < deadline,
                "dunst did not take the notification name"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `echowarp [args] doctor` with `env`: (exit code, the report).
fn doctor(sb: &Sandbox, env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.push("doctor");
    let mut c = sb.command(&all);
    for (k, v) in env {
        c.env(k, v);
    }
    let p = Proc::spawn(c, &all);
    let mut p = p;
    let status = p.wait_timeout(SECS(30));
    let out = p.stdout();
    assert!(
        p.stderr().is_empty(),
        "the doctor's report goes to stdout, and nothing else is said:\n{}",
        p.stderr()
    );
    eprintln!("$ echowarp {}\n{out}", all.join(" "));
    (status.code().unwrap_or(-1), out)
}

/// The report's line for `check`: (verdict, what it says).
fn line<'a>(report: &'a str, check: &str) -> (&'a str, &'a str) {
    report
        .lines()
        .find_map(|l| {
            let (verdict, rest) = l.split_once("  ")?;
            let rest = rest.trim_start();
            let said = rest.strip_prefix(check)?;
            said.starts_with("  ")
                .then(|| (verdict.trim(), said.trim()))
        })
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

#[test]
fn the_doctor_passes_a_working_machine_and_names_each_broken_thing() {
    let _one = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let pw = PipeWire::start(&sb);
    let notices = Notices::start(&pw);
    let port = free_port().to_string();

    // All well: the server's default input runs, the port is free and reachable, notices have
    // a service. A desktop (the X display) with no StatusNotifier host: the tray is warned of.
    let mut desktop = pw.env.clone();
    desktop.push(("DISPLAY".to_owned(), notices.1.clone()));
    let (code, report) = doctor(&sb, &desktop, &["-u", &port]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        line(&report, "profile"),
        ("ok", &*format!("server, port {port}, audio host auto"))
    );
    assert_eq!(
        line(&report, "sound server"),
        ("ok", "PipeWire, with a PulseAudio server (pipewire-pulse)")
    );
    let (v, said) = line(&report, "audio host");
    assert!(
        v == "ok" && said.starts_with("PipeWire (auto): "),
        "{report}"
    );
    let (v, said) = line(&report, "device");
    assert!(
        v == "ok" && said.contains("delivers audio (48000 Hz"),
        "{report}"
    );
    assert_eq!(
        line(&report, "port"),
        (
            "ok",
            &*format!("{port} is free, and TCP and UDP reach it at 127.0.0.1")
        )
    );
    let (v, said) = line(&report, "notifications");
    assert!(v == "ok" && said.contains("on the session bus"), "{report}");
    let (v, said) = line(&report, "tray");
    assert!(
        v == "warn" && said.starts_with("no StatusNotifier host"),
        "{report}"
    );
    for check in ["virtual cable", "firewall"] {
        line(&report, check);
    }
    let (v, said) = line(&report, "virtual microphone");
    assert!(
        v == "ok" && said.contains("\"EchoWarp Microphone\""),
        "{report}"
    );
    assert!(report.ends_with("\nnothing blocks streaming\n"), "{report}");

    // A client: its sink plays, and the server it names is out of reach.
    let (code, report) = doctor(
        &sb,
        &pw.env,
        &["-c", "-a", "127.0.0.1", "-u", &port, "-d", "sinkB"],
    );
    assert_eq!(code, 1, "{report}");
    let (v, said) = line(&report, "device");
    assert!(v == "ok" && said.contains("opens and runs"), "{report}");
    assert_eq!(
        line(&report, "server"),
        ("FAIL", &*format!("nothing listens at 127.0.0.1:{port}"))
    );

    // The port taken by another program.
    let taken = std::net::TcpListener::bind(("::", 0)).expect("bind");
    let taken_port = taken.local_addr().expect("addr").port().to_string();
    let (code, report) = doctor(&sb, &pw.env, &["-u", &taken_port]);
    assert_eq!(code, 1, "{report}");
    let (v, said) = line(&report, "port");
    assert!(
        v == "FAIL" && said.starts_with(&format!("{taken_port} is taken")),
        "{report}"
    );
    assert!(
        report.contains(&format!("fix: ss -ltnup 'sport = :{taken_port}'")),
        "{report}"
    );
    assert!(
        report.ends_with("\n1 problem blocks streaming\n"),
        "{report}"
    );
    drop(taken);

    // No notification service on the bus.
    drop(notices);
    let (code, report) = doctor(&sb, &pw.env, &["-u", &port]);
    assert_eq!(code, 0, "notices are a comfort, not a block:\n{report}");
    let (v, said) = line(&report, "notifications");
    assert!(
        v == "warn" && said.starts_with("no notification service"),
        "{report}"
    );

    // No sound server: the same machine with the session's sockets out of reach.
    let empty = sb.path("no-session");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let env: Vec<(String, String)> = pw
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "XDG_RUNTIME_DIR" => (k.clone(), empty.display().to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let (code, report) = doctor(&sb, &env, &["-u", &port]);
    assert_eq!(code, 1, "{report}");
    let (v, said) = line(&report, "sound server");
    assert!(
        v == "warn" && said.starts_with("neither PipeWire nor PulseAudio answers"),
        "{report}"
    );
    let (v, said) = line(&report, "device");
    assert!(v == "FAIL" && said.contains("cannot open it"), "{report}");
    assert!(
        report.contains("fix: start the sound server: systemctl --user start pipewire"),
        "{report}"
    );
}
