//! The tray through a real X server: Xvfb, the trayer tray host and a private D-Bus session
//! (testing.md). Clicks go through xdotool as a person's would; screenshots are saved under
//! `target/tray-screenshots/` (the ones in docs/ come from here).
#![cfg(feature = "tray")]

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Clicks land where a person's would: one tray on screen at a time.
static ONE_DESKTOP: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Desktop {
    display: String,
    children: Vec<Child>,
    _dbus: DbusSession,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The geometry of a top-level window: (x, y, width, height).
type Geometry = (i32, i32, i32, i32);

impl Desktop {
    fn start(sb: &Sandbox) -> Self {
        let dbus = DbusSession::start(&sb.path("bus"));
        // A display number no other test or session uses: one per test, per process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = 100
            + (std::process::id() % 200) * 4
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let display = format!(":{n}");
        let xvfb = Command::new("Xvfb")
            .args([&display, "-screen", "0", "800x600x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed by the test command");
        let mut d = Self {
            display,
            children: vec![xvfb],
            _dbus: dbus,
        };
        let deadline = Instant::now() + SECS(10);
        while !d.x(&["xdpyinfo"]).is_ok_and(|o| o.status.success()) {
            assert!(Instant::now() < deadline, "Xvfb did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let trayer = d
            .cmd("trayer")
            .args([
                "--edge",
                "top",
                "--align",
                "right",
                "--widthtype",
                "request",
                "--height",
                "32",
            ])
            .args([
                "--transparent",
                "false",
                "--tint",
                "0x808080",
                "--SetDockType",
                "true",
                "--expand",
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("trayer");
        d.children.push(trayer);
        d.wait_window(|name, _| name == "panel", "trayer's panel");
        d
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self._dbus.address)
            .env("NO_AT_BRIDGE", "1");
        c
    }

    fn x(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        self.cmd(args[0])
            .args(&args[1..])
            .stderr(Stdio::null())
            .output()
    }

    /// Top-level windows as (name, geometry).
    fn windows(&self) -> Vec<(String, Geometry)> {
        let out = self
            .x(&["xwininfo", "-root", "-children"])
            .expect("xwininfo");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split('"').nth(1)?.to_owned();
                let geo = l
                    .split_whitespace()
                    .find(|w| w.contains('x') && w.contains('+'))?;
                let (wh, xy) = geo.split_once('+')?;
                let (w, h) = wh.split_once('x')?;
                let (x, y) = xy.split_once('+')?;
                Some((
                    name,
                    (
                        x.parse().ok()?,
                        y.parse().ok()?,
                        w.parse().ok()?,
                        h.parse().ok()?,
                    ),
                ))
            })
            .collect()
    }

    fn wait_window(&self, pick: impl Fn(&str, Geometry) -> bool, what: &str) -> Geometry {
        let deadline = Instant::now() + SECS(10);
        loop {
            if let Some((_, g)) = self.windows().into_iter().find(|(n, g)| pick(n, *g)) {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never appeared: {:?}",
                self.windows()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, x: i32, y: i32) {
        let ok = self
            .x(&[
                "xdotool",
                "mousemove",
                &x.to_string(),
                &y.to_string(),
                "click",
                "1",
            ])
            .expect("xdotool");
        assert!(ok.status.success());
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tray-screenshots");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(name);
        let ok = self
            .x(&[
                "import",
                "-window",
                "root",
                path.to_str().expect("utf-8 path"),
            ])
            .expect("import");
        assert!(ok.status.success(), "screenshot failed");
        path
    }

    /// Opens the tray menu by clicking the icon; returns the menu window's geometry.
    fn open_menu(&self) -> Geometry {
        let (px, py, pw, ph) = self.wait_window(|n, _| n == "panel", "panel");
        // The icon sits at the right end of the panel.
        self.click(px + pw - 16, py + ph / 2);
        self.wait_window(
            |n, (_, y, w, h)| n == "echowarp" && w > 150 && h > 100 && y >= 0,
            "the tray menu",
        )
    }

    /// Clicks menu row `row` (0 = the status line; rows are a fixed height in Xvfb's default theme).
    fn click_row(&self, menu: Geometry, row: i32, separators_before: i32) {
        let (x, y, _, _) = menu;
        // GTK's default theme: the first row is centred 16 px below the top, rows are 25 px,
        // separators 1 px (measured from the screenshots).
        self.click(x + 60, y + 16 + 25 * row + separators_before);
    }

    /// Waits until the menu has closed (after a click).
    fn wait_menu_closed(&self) {
        let deadline = Instant::now() + SECS(5);
        while self
            .windows()
            .iter()
            .any(|(n, (_, y, w, h))| n == "echowarp" && *w > 150 && *h > 100 && *y >= 0)
        {
            assert!(Instant::now() < deadline, "the menu stayed open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

#[test]
fn the_tray_menu_starts_and_stops_the_server() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let port = free_port();
    std::fs::create_dir_all(sb.path("config/echowarp")).expect("mkdir");
    std::fs::write(
        sb.path("config/echowarp/profile.toml"),
        format!("port = {port}\ndevice = \"tone:1000\"\nstart_streaming = false\n"),
    )
    .expect("profile");
    let mut cmd = sb.command(&["--tray"]);
    cmd.env("DISPLAY", &desk.display)
        .env("DBUS_SESSION_BUS_ADDRESS", &desk._dbus.address)
        .env("NO_AT_BRIDGE", "1");
    let mut tray = Proc::spawn(cmd, &["--tray"]);
    tray.wait_for("tray ready", SECS(20));
    // The icon is embedded: the panel grew to hold it.
    let (_, _, panel_w, _) = desk.wait_window(
        |n, (_, _, w, _)| n == "panel" && w >= 30,
        "the icon in the panel",
    );
    assert!(panel_w >= 30);
    desk.screenshot("tray.png");
    assert!(
        !listening(port),
        "start_streaming = false: nothing runs yet"
    );

    let menu = desk.open_menu();
    desk.screenshot("tray-menu.png");
    desk.click_row(menu, 1, 1); // Start
    desk.wait_menu_closed();
    tray.wait_for("server on", SECS(10));
    assert!(listening(port));

    // A client receives the tone the tray's server streams.
    let p = port.to_string();
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &p, "-d", "wav:rec.wav"]);
    client.wait_for("connected to", SECS(10));
    let deadline = Instant::now() + SECS(10);
    while std::fs::metadata(sb.path("rec.wav"))
        .map(|m| m.len())
        .unwrap_or(0)
        < 96_000
    {
        assert!(Instant::now() < deadline, "no audio:\n{}", client.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let menu = desk.open_menu();
    desk.screenshot("tray-menu-streaming.png");
    desk.click_row(menu, 1, 1); // Stop
    desk.wait_menu_closed();
    let deadline = Instant::now() + SECS(10);
    while listening(port) {
        assert!(
            Instant::now() < deadline,
            "Stop did not stop the server:\n{}",
            tray.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client.signal("TERM");
    assert!(client.wait_timeout(SECS(10)).success());
    let (_, samples) = read_wav(&sb.path("rec.wav"));
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 15_000, "the tone arrived (peak {peak})");

    // Rows: status | Start/Stop, Role, Device, Banned clients | Edit profile, Open logs | Quit.
    let menu = desk.open_menu();
    desk.click_row(menu, 7, 3);
    let status = tray.wait_timeout(SECS(10));
    assert!(status.success(), "Quit: {status}\n{}", tray.stderr());
}

#[test]
fn failed_logins_notify_and_the_ban_menu_unbans() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let monitor_log = sb.path("notifications.log");
    let monitor = desk
        .cmd("dbus-monitor")
        .args([
            "--address",
            &desk._dbus.address,
            "interface='org.freedesktop.Notifications'",
        ])
        .stdout(std::fs::File::create(&monitor_log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor");
    let _monitor = KillOnDrop(monitor);
    let port = free_port();
    std::fs::create_dir_all(sb.path("config/echowarp")).expect("mkdir");
    std::fs::write(
        sb.path("config/echowarp/profile.toml"),
        format!("port = {port}\ndevice = \"null\"\npassword = \"right\"\nreconnect_attempts = 2\n"),
    )
    .expect("profile");
    let mut cmd = sb.command(&["--tray"]);
    cmd.env("DISPLAY", &desk.display)
        .env("DBUS_SESSION_BUS_ADDRESS", &desk._dbus.address)
        .env("NO_AT_BRIDGE", "1");
    let mut tray = Proc::spawn(cmd, &["--tray"]);
    tray.wait_for("server on", SECS(20));

    let p = port.to_string();
    for _ in 0..2 {
        let (code, err) = one_attempt(&sb, &p, "wrong");
        assert_eq!(code, 3, "{err}");
    }
    let deadline = Instant::now() + SECS(10);
    loop {
        let log = std::fs::read_to_string(&monitor_log).unwrap_or_default();
        if log.contains("Wrong password from 127.0.0.1 (1 of 2 before a ban)")
            && log.contains("127.0.0.1 is banned")
        {
            assert!(log.contains("member=Notify"), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notifications not seen on the bus:\n{log}\n{}",
            tray.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_to_string(sb.ban_list()).expect("ban list"),
        "127.0.0.1\n"
    );

    // Banned clients (row 4, after one separator) opens a submenu whose first row unbans.
    let menu = desk.open_menu();
    desk.click_row(menu, 4, 1);
    let sub = desk.wait_window(
        |n, g| n == "echowarp" && g != menu && g.2 > 50 && g.1 >= 0 && g.3 > 20,
        "the Banned clients submenu",
    );
    desk.screenshot("tray-banned.png");
    desk.click(sub.0 + 40, sub.1 + 16);
    let deadline = Instant::now() + SECS(10);
    while std::fs::read_to_string(sb.ban_list())
        .unwrap_or_default()
        .contains("127.0.0.1")
    {
        assert!(
            Instant::now() < deadline,
            "Unban did not edit the ban list:\n{}",
            tray.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, err) = one_attempt(&sb, &p, "wrong");
    assert_eq!(
        code, 3,
        "unbanned: a wrong password is 401 again, not 403: {err}"
    );
    tray.signal("TERM");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
