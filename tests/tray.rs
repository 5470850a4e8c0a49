//! The tray through a real X server: Xvfb, the trayer tray host and a private D-Bus session
//! (testing.md). Clicks go through xdotool as a person's would; screenshots are saved under
//! `target/tray-screenshots/` (the ones in docs/ come from here).
//!
//! Needs: Xvfb, trayer, xdotool, ImageMagick, dbus-daemon and dunst (scripts/test.sh installs
//! them); each test starts its own display and bus.
#![cfg(feature = "tray")]

mod common;
use common::pipewire::{PipeWire, ONE_SESSION};
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
        // A real notification daemon (testing.md), so notifications are shown, not just sent.
        let dunst = d
            .cmd("dunst")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dunst");
        d.children.push(dunst);
        let deadline = Instant::now() + SECS(10);
        while !d
            .x(&[
                "dbus-send",
                &format!("--bus={}", d._dbus.address),
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        {
            assert!(
                Instant::now() < deadline,
                "dunst did not take the notification name"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
        // The icon is in once the panel has grown to hold it.
        let (px, py, pw, ph) = self.wait_window(|n, g| n == "panel" && g.2 >= 30, "the icon");
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

    /// Clicks menu row `row`, a submenu, and waits for that submenu (`what`) to open.
    fn open_submenu(
        &self,
        menu: Geometry,
        row: i32,
        separators_before: i32,
        what: &str,
    ) -> Geometry {
        self.click_row(menu, row, separators_before);
        self.wait_window(
            |n, g| n == "echowarp" && g != menu && g.2 > 50 && g.1 >= 0 && g.3 > 20,
            what,
        )
    }

    /// The icon's pixels (the right end of the panel, where `open_menu` clicks), as RGB, from a
    /// screenshot saved as `name`.
    fn icon_pixels(&self, name: &str) -> Vec<u8> {
        let (px, py, pw, ph) = self.wait_window(|n, g| n == "panel" && g.2 >= 30, "the icon");
        let path = self.screenshot(name);
        let file = std::fs::File::open(&path).expect("the screenshot");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("PNG data");
        let bpp = info.color_type.samples();
        let mut out = Vec::new();
        for y in py.max(0)..py + ph {
            for x in (px + pw - 32).max(0)..px + pw {
                let at = (y as usize * info.width as usize + x as usize) * bpp;
                out.extend_from_slice(&buf[at..at + 3]);
            }
        }
        out
    }

    /// Types `texts` into the window titled `title` (focused first: there is no window manager).
    fn type_into(&self, title: &str, texts: &[&str]) {
        let ok = self
            .x(&[
                "xdotool",
                "search",
                "--name",
                title,
                "windowfocus",
                "--sync",
            ])
            .expect("xdotool");
        assert!(ok.status.success(), "no window {title:?} to type into");
        for t in texts {
            let ok = self
                .x(&["xdotool", "type", "--delay", "30", t])
                .expect("xdotool");
            assert!(ok.status.success());
        }
    }

    /// Presses a key (xdotool's names: Return, Tab, ctrl+a).
    fn key(&self, key: &str) {
        let ok = self.x(&["xdotool", "key", key]).expect("xdotool");
        assert!(ok.status.success());
        std::thread::sleep(Duration::from_millis(200));
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

impl Desktop {
    /// The tray, started from `exe` in the sandbox, on this desktop.
    fn tray(&self, sb: &Sandbox, exe: &std::path::Path) -> Proc {
        // The sandbox's environment, with another program.
        let cmd = sb.command(&["--tray"]);
        let mut with_exe = Command::new(exe);
        with_exe
            .arg("--tray")
            .current_dir(sb.dir.path())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("ECHOWARP_LOG")
            .env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self._dbus.address)
            .env("NO_AT_BRIDGE", "1")
            .stdin(Stdio::null());
        Proc::spawn(with_exe, &["--tray"])
    }

    /// Records the session bus's notification calls into a file.
    fn watch_notifications(&self, sb: &Sandbox) -> (KillOnDrop, PathBuf) {
        let log = sb.path("notifications.log");
        let monitor = self
            .cmd("dbus-monitor")
            .args([
                "--address",
                &self._dbus.address,
                "interface='org.freedesktop.Notifications'",
            ])
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor");
        // dbus-monitor must be listening before anything is sent.
        std::thread::sleep(Duration::from_millis(300));
        (KillOnDrop(monitor), log)
    }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` and `context()` after `timeout`.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_profile(sb: &Sandbox, text: &str) {
    std::fs::create_dir_all(sb.path("config/echowarp")).expect("mkdir");
    std::fs::write(sb.path("config/echowarp/profile.toml"), text).expect("profile");
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
    let (_monitor, monitor_log) = desk.watch_notifications(&sb);
    let port = free_port();
    write_profile(
        &sb,
        &format!("port = {port}\ndevice = \"tone:1000\"\nstart_streaming = false\n"),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
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
    // The profile has no password: one notification says so.
    wait_until(
        "no notification that the server has no password",
        SECS(10),
        || {
            std::fs::read_to_string(&monitor_log)
                .unwrap_or_default()
                .contains("Anyone on your local networks can listen")
        },
        || tray.stderr(),
    );

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

    // Rows: status | Start/Stop, Mute, Role, Servers on this network, Connect to a server,
    // Password, Device, Latency, Banned clients | Start at login, Edit profile, Open logs | Quit.
    let menu = desk.open_menu();
    desk.click_row(menu, 13, 3);
    let status = tray.wait_timeout(SECS(10));
    assert!(status.success(), "Quit: {status}\n{}", tray.stderr());
}

/// Mute from the menu: a muted server sends silence and its icon is crossed out; unmuted, the
/// tone comes back with no restart, and the profile says which (its own lines kept).
#[test]
fn mute_sends_silence_and_crosses_the_icon_out_until_unmuted() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let port = free_port();
    write_profile(
        &sb,
        &format!("# mine\nport = {port}\ndevice = \"tone:1000\"\nmute = true\n"),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
    tray.wait_for("server on", SECS(20));
    // What a client hears for half a second, then its peak.
    let listen = |wav: &str| {
        let p = port.to_string();
        let mut client = sb.spawn(&[
            "-c",
            "-a",
            "127.0.0.1",
            "-u",
            &p,
            "-d",
            &format!("wav:{wav}"),
        ]);
        client.wait_for("connected to", SECS(10));
        let deadline = Instant::now() + SECS(10);
        while std::fs::metadata(sb.path(wav))
            .map(|m| m.len())
            .unwrap_or(0)
            < 96_000
        {
            assert!(Instant::now() < deadline, "no audio:\n{}", client.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        client.signal("TERM");
        assert!(client.wait_timeout(SECS(10)).success());
        let (_, samples) = read_wav(&sb.path(wav));
        assert!(samples.len() >= 48_000, "{} samples", samples.len());
        samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
    };
    // A client's visit leaves the server streaming-coloured for a moment: the icons compared
    // are both taken while one listens, so only the mark can differ.
    let muted_peak = listen("muted.wav");
    assert_eq!(muted_peak, 0, "a muted server sent sound");
    let p = port.to_string();
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &p, "-d", "null"]);
    client.wait_for("connected to", SECS(10));
    std::thread::sleep(SECS(2)); // the next Stats: "1 client"
    let crossed = desk.icon_pixels("tray-muted.png");

    let menu = desk.open_menu();
    desk.click_row(menu, 2, 1); // Mute
    desk.wait_menu_closed();
    tray.wait_for("menu: ToggleMute", SECS(10));
    std::thread::sleep(Duration::from_millis(500));
    let plain = desk.icon_pixels("tray-unmuted.png");
    let differ = crossed
        .chunks(3)
        .zip(plain.chunks(3))
        .filter(|(a, b)| a.iter().zip(*b).any(|(x, y)| x.abs_diff(*y) > 60))
        .count();
    assert!(differ > 20, "the icon did not change ({differ} pixels)");
    client.signal("TERM");
    assert!(client.wait_timeout(SECS(10)).success());

    let peak = listen("unmuted.wav");
    assert!(peak > 15_000, "the tone did not come back (peak {peak})");
    assert_eq!(
        tray.stderr().matches("server on").count(),
        1,
        "mute restarted the stream:\n{}",
        tray.stderr()
    );
    let saved = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("profile");
    assert!(
        saved.starts_with("# mine\n") && saved.contains("mute = false"),
        "{saved}"
    );
}

/// The connect dialog: an address typed in and a password that shows as dots; the tray becomes
/// that server's client and streams, and the profile keeps its lines. Then the password dialog.
#[test]
fn the_connect_dialog_takes_an_address_and_a_password_and_the_client_streams() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let port = free_port();
    let p = port.to_string();
    // The server reads an empty profile of its own; the tray's is the sandbox's.
    std::fs::write(sb.path("server.toml"), "").expect("server profile");
    let mut server = sb.spawn(&[
        "-f",
        "server.toml",
        "-u",
        &p,
        "-d",
        "tone:1000",
        "-p",
        "s3cret w0rd",
    ]);
    server.wait_for("server on", SECS(10));
    write_profile(
        &sb,
        &format!("# mine\nport = {port}\ndevice = \"wav:rec.wav\"\nstart_streaming = false\n"),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
    tray.wait_for("tray ready", SECS(20));

    let menu = desk.open_menu();
    desk.click_row(menu, 5, 1); // Connect to a server…
    let title = "EchoWarp: connect to a server";
    desk.wait_window(|n, g| n == title && g.2 > 100, "the connect dialog");
    desk.type_into(title, &["127.0.0.1"]);
    desk.key("Return"); // on to the password
    desk.type_into(title, &["s3cret w0rd"]);
    desk.screenshot("tray-connect-dialog.png");
    desk.key("Return"); // Connect
    tray.wait_for("connected to", SECS(20));
    server.wait_for(" joined (session", SECS(10));
    let deadline = Instant::now() + SECS(10);
    while std::fs::metadata(sb.path("rec.wav"))
        .map(|m| m.len())
        .unwrap_or(0)
        < 96_000
    {
        assert!(Instant::now() < deadline, "no audio:\n{}", tray.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("profile");
    assert_profile_kept_with(
        &saved,
        &[
            "role = \"client\"",
            "server_address = \"127.0.0.1\"",
            "password = \"s3cret w0rd\"",
        ],
    );
    assert!(
        !tray.stderr().contains("s3cret"),
        "the password reached the log:\n{}",
        tray.stderr()
    );

    // The password dialog: a new one is written (the client restarts with it).
    let menu = desk.open_menu();
    desk.click_row(menu, 6, 1); // Password…
    let title = "EchoWarp: password";
    desk.wait_window(|n, g| n == title && g.2 > 100, "the password dialog");
    desk.key("ctrl+a");
    desk.type_into(title, &["n3w"]);
    desk.screenshot("tray-password-dialog.png");
    desk.key("Return");
    wait_until(
        "the new password was not written",
        SECS(10),
        || {
            std::fs::read_to_string(sb.path("config/echowarp/profile.toml"))
                .unwrap_or_default()
                .contains("password = \"n3w\"")
        },
        || tray.stderr(),
    );
    server.stop();
}

#[test]
fn failed_logins_notify_and_the_ban_menu_unbans() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let (_monitor, monitor_log) = desk.watch_notifications(&sb);
    let port = free_port();
    write_profile(
        &sb,
        &format!(
            "port = {port}\ndevice = \"null\"\npassword = \"right\"\nreconnect_attempts = 2\n"
        ),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
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

    // Banned clients (row 9, after one separator) opens a submenu whose first row unbans.
    let menu = desk.open_menu();
    let sub = desk.open_submenu(menu, 9, 1, "the Banned clients submenu");
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

#[test]
fn profile_edits_move_the_server_and_a_bad_edit_is_told() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let (_monitor, log) = desk.watch_notifications(&sb);
    let (p1, p2) = (free_port(), free_port());
    write_profile(
        &sb,
        &format!("# my settings\nport = {p1}\ndevice = \"null\"\nserver_address = \"127.0.0.1\"\n"),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
    tray.wait_for("server on", SECS(20));
    assert!(listening(p1));

    // A hand edit of the port moves the server.
    write_profile(
        &sb,
        &format!("# my settings\nport = {p2}\ndevice = \"null\"\nserver_address = \"127.0.0.1\"\n"),
    );
    wait_until(
        "the server did not move to the new port",
        SECS(15),
        || listening(p2) && !listening(p1),
        || tray.stderr(),
    );

    // A broken edit leaves it where it is and says which line is wrong.
    write_profile(&sb, &format!("# my settings\nport = {p1}\ndevice = null\n"));
    wait_until(
        "no notification naming the bad line",
        SECS(15),
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("line 3") && l.contains("profile error"))
        },
        || {
            format!(
                "{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                tray.stderr()
            )
        },
    );
    assert!(
        listening(p2) && !listening(p1),
        "the running settings are kept"
    );
    assert!(
        !tray.stderr().contains("no notification service"),
        "dunst showed it: {}",
        tray.stderr()
    );

    // Fixed again (same settings as running): nothing restarts. Then Role -> Client from the
    // menu: the tray's server stops and its client connects to the profile's server address.
    write_profile(
        &sb,
        &format!("# my settings\nport = {p2}\ndevice = \"null\"\nserver_address = \"127.0.0.1\"\n"),
    );
    std::thread::sleep(Duration::from_millis(800)); // past the watch's debounce
    assert_eq!(
        tray.stderr().matches("server on").count(),
        2,
        "{}",
        tray.stderr()
    );
    let menu = desk.open_menu();
    let sub = desk.open_submenu(menu, 3, 1, "the Role submenu");
    desk.click(sub.0 + 40, sub.1 + 16 + 25); // Client
    wait_until(
        "the tray's server did not stop",
        SECS(10),
        || !listening(p2),
        || tray.stderr(),
    );
    let p = p2.to_string();
    // The sandbox's profile now says client: the server reads an empty one of its own.
    std::fs::write(sb.path("server.toml"), "").expect("server profile");
    let mut server = sb.spawn(&["-f", "server.toml", "-u", &p, "-d", "tone:440", "-r", "0"]);
    server.wait_for("server on", SECS(10));
    tray.wait_for("connected to 127.0.0.1", SECS(20));
    server.wait_for(" joined (session", SECS(10));
    let saved = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("profile");
    assert!(
        saved.starts_with("# my settings\n") && saved.contains("role = \"client\""),
        "the menu's change is written back, keeping the comment:\n{saved}"
    );
    tray.signal("TERM");
    server.signal("TERM");
}

#[test]
fn start_at_login_survives_a_path_with_a_space() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    // Installed where a space would break an unquoted Exec line.
    let dir = sb.path("Echo Warp/bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let exe = dir.join("echowarp");
    std::fs::copy(BIN, &exe).expect("copy the binary");
    write_profile(&sb, "# mine\nstart_streaming = false\n");
    let mut tray = desk.tray(&sb, &exe);
    tray.wait_for("tray ready", SECS(20));
    let entry = sb.path(".config/autostart/echowarp.desktop");
    assert!(!entry.exists());

    let menu = desk.open_menu();
    desk.click_row(menu, 10, 2); // Start at login
    desk.wait_menu_closed();
    wait_until(
        "no autostart entry",
        SECS(10),
        || entry.exists(),
        || tray.stderr(),
    );
    let text = std::fs::read_to_string(&entry).expect("entry");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .unwrap_or_else(|| panic!("no Exec line:\n{text}"));
    let args = echowarp::ui::autostart::parse_desktop_exec(exec);
    assert_eq!(args, [exe.to_str().expect("utf-8"), "--tray"], "{exec}");
    let out = Command::new(&args[0])
        .arg("--version")
        .output()
        .expect("Exec runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("echowarp "));
    let profile = sb.path("config/echowarp/profile.toml");
    let saved = std::fs::read_to_string(&profile).expect("profile");
    assert!(
        saved.starts_with("# mine\n") && saved.contains("autostart = true"),
        "{saved}"
    );

    // Off from the menu: the entry goes, the profile follows.
    let menu = desk.open_menu();
    desk.click_row(menu, 10, 2);
    desk.wait_menu_closed();
    wait_until(
        "the entry stayed",
        SECS(10),
        || !entry.exists(),
        || tray.stderr(),
    );
    let saved = std::fs::read_to_string(&profile).expect("profile");
    assert!(saved.contains("autostart = false"), "{saved}");

    // And a hand edit of the profile turns it back on.
    std::fs::write(
        &profile,
        "# mine\nstart_streaming = false\nautostart = true\n",
    )
    .expect("edit");
    wait_until(
        "a hand edit did not register the login entry",
        SECS(10),
        || entry.exists(),
        || tray.stderr(),
    );
    tray.signal("TERM");
}

#[test]
fn a_bad_profile_at_start_is_told_and_fixing_it_starts_the_stream() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let (_monitor, log) = desk.watch_notifications(&sb);
    let port = free_port();
    write_profile(
        &sb,
        &format!("port = {port}\nmax_clients = 0\ndevice = \"null\"\n"),
    );
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
    tray.wait_for("tray ready", SECS(20));
    wait_until(
        "no notification for the bad profile",
        SECS(10),
        || {
            std::fs::read_to_string(&log).is_ok_and(|l| {
                l.contains("profile error") && l.contains("line 2, key `max_clients`")
            })
        },
        || {
            format!(
                "{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                tray.stderr()
            )
        },
    );
    assert!(
        !listening(port),
        "nothing streams on settings the user did not choose"
    );
    write_profile(
        &sb,
        &format!("port = {port}\nmax_clients = 2\ndevice = \"null\"\n# fixed\n"),
    );
    tray.wait_for("server on", SECS(15));
    assert!(listening(port));
    let text = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("profile");
    assert!(
        text.ends_with("# fixed\n"),
        "the user's file is untouched: {text}"
    );
    tray.signal("TERM");
}

/// A capture device that goes away while a client listens, and comes back: the tray says each
/// once, as a notification (issue 22). The server reaches a PipeWire session's sink A through
/// PipeWire's own API; the sink is removed and made again, as a USB headset is unplugged.
#[test]
fn a_lost_device_and_its_return_are_each_told_once() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let _session = ONE_SESSION.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    let pw = PipeWire::start(&sb);
    let (_monitor, log) = desk.watch_notifications(&sb);
    let port = free_port();
    write_profile(
        &sb,
        &format!(
            "port = {port}\naudio_host = \"pipewire\"\ndevice = \"sinkA\"\ndevice_kind = \"output\"\n"
        ),
    );
    // The tray in the sound session (its runtime folder), notifying on the desktop's bus.
    let mut tray = {
        let mut c = Command::new(BIN);
        c.arg("--tray")
            .current_dir(sb.dir.path())
            .env("XDG_CONFIG_HOME", sb.path("config"))
            .env("XDG_DATA_HOME", sb.path("data"))
            .env("HOME", sb.dir.path())
            .env_remove("ECHOWARP_LOG")
            .stdin(Stdio::null());
        for (k, v) in pw
            .env
            .iter()
            .filter(|(k, _)| k != "DBUS_SESSION_BUS_ADDRESS")
        {
            c.env(k, v);
        }
        c.env("DISPLAY", &desk.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &desk._dbus.address)
            .env("NO_AT_BRIDGE", "1");
        Proc::spawn(c, &["--tray"])
    };
    tray.wait_for("server on", SECS(20));
    // A listener, so that the server holds its device.
    let p = port.to_string();
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &p, "-d", "null"]);
    client.wait_for("connected to", SECS(15));
    tray.wait_for("capture started", SECS(10));
    pw.remove_sink("sinkA");
    tray.wait_for("is lost", SECS(10));
    std::thread::sleep(SECS(2));
    pw.add_sink("sinkA");
    tray.wait_for("is back", SECS(10));
    let told = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(text)
            .count()
    };
    let deadline = Instant::now() + SECS(10);
    while told("is back") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second, for a repeat to show itself if there were one.
    std::thread::sleep(SECS(1));
    let all = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        (told("lost: waiting for it"), told("is back")),
        (1, 1),
        "the loss and the return each once:\n{all}\n{}",
        tray.stderr()
    );
    assert!(all.contains("Capture device"), "{all}");
    client.stop();
}

/// A server announced on the local network shows in "Servers on this network"; a click makes
/// the tray its client, connects, and writes the choice to the profile (issue 20).
#[test]
fn a_server_on_the_network_is_listed_and_a_click_joins_it() {
    let _one = ONE_DESKTOP.lock().unwrap_or_else(|p| p.into_inner());
    let sb = Sandbox::new();
    let desk = Desktop::start(&sb);
    // The tray: a server, not streaming (so not announcing itself), on a port of its own.
    write_profile(
        &sb,
        &format!(
            "# mine\nport = {}\ndevice = \"null\"\npassword = \"secret\"\nstart_streaming = false\n",
            free_port()
        ),
    );
    let port = free_port().to_string();
    std::fs::write(sb.path("server.toml"), "").expect("server profile");
    let mut server = sb.spawn(&[
        "-f",
        "server.toml",
        "-u",
        &port,
        "-d",
        "tone:440",
        "-r",
        "0",
        // With a password: the client may come through any address the server announces,
        // this machine's LAN one too.
        "-p",
        "secret",
    ]);
    server.wait_for("announced on the local network as", SECS(10));
    let name = server
        .stderr()
        .lines()
        .find_map(|l| l.split('"').nth(1).map(str::to_owned))
        .expect("the announced name");
    let mut tray = desk.tray(&sb, std::path::Path::new(BIN));
    tray.wait_for("tray ready", SECS(20));
    // The first answers come within a second or two of the browse.
    std::thread::sleep(SECS(3));

    // Rows: status | Start, Mute, Role, Servers on this network ...
    let menu = desk.open_menu();
    let sub = desk.open_submenu(menu, 4, 1, "the Servers on this network submenu");
    desk.screenshot("tray-servers.png");
    desk.click(sub.0 + 40, sub.1 + 16);
    tray.wait_for(&format!("menu: JoinServer({name:?})"), SECS(10));
    tray.wait_for("connected to", SECS(20));
    server.wait_for(" joined (session", SECS(10));
    let saved = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("profile");
    assert!(
        saved.starts_with("# mine\n")
            && saved.contains("role = \"client\"")
            && saved.contains(&format!("server_address = {name:?}")),
        "the choice is written back, keeping the comment:\n{saved}"
    );
    tray.signal("TERM");
    server.signal("TERM");
}
