//! The doctor's checks of the system around the audio: the sound server, the port, the
//! firewall, notifications and the tray host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Finding, Verdict};
use crate::store::profile::{Profile, Role};

/// How long a connection to the server (or to ourselves on loopback) may take.
const REACH: Duration = Duration::from_secs(2);

/// Linux: which sound servers answer on their sockets. Elsewhere the system's audio service is
/// not a separate thing to check (the audio host's check covers it).
pub(super) fn sound_server() -> Option<Finding> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let pipewire = unix_socket_answers(
        std::env::var_os("PIPEWIRE_REMOTE")
            .map(std::path::PathBuf::from)
            .or_else(|| runtime_dir().map(|d| d.join("pipewire-0"))),
    );
    let pulse = unix_socket_answers(
        std::env::var("PULSE_SERVER")
            .ok()
            .and_then(|s| s.strip_prefix("unix:").map(std::path::PathBuf::from))
            .or_else(|| runtime_dir().map(|d| d.join("pulse/native"))),
    );
    Some(match (pipewire, pulse) {
        (true, true) => Finding::new(
            "sound server",
            Verdict::Ok,
            "PipeWire, with a PulseAudio server (pipewire-pulse)",
        ),
        (true, false) => Finding::new(
            "sound server",
            Verdict::Note,
            "PipeWire, without a PulseAudio server: programs that speak PulseAudio (and ALSA's pulse plug-in) cannot reach it",
        )
        .fix("systemctl --user start pipewire-pulse"),
        (false, true) => Finding::new("sound server", Verdict::Ok, "PulseAudio"),
        (false, false) => Finding::new(
            "sound server",
            Verdict::Warn,
            "neither PipeWire nor PulseAudio answers: only ALSA's own devices can be used",
        )
        .fix("systemctl --user start pipewire pipewire-pulse wireplumber (or pulseaudio --start)"),
    })
}

fn runtime_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from)
}

#[cfg(unix)]
fn unix_socket_answers(path: Option<std::path::PathBuf>) -> bool {
    path.is_some_and(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
}

#[cfg(not(unix))]
fn unix_socket_answers(_: Option<std::path::PathBuf>) -> bool {
    false
}

/// Server: the port is free for TCP and UDP and reachable on loopback. Client: the server
/// accepts connections.
pub(super) fn port(profile: &Profile, bind: Option<IpAddr>) -> Finding {
    match profile.role {
        Role::Server => server_port(profile.port, bind),
        Role::Client => server_reach(&profile.server_address, profile.port),
    }
}

fn who_has(port: u16) -> String {
    let who = if cfg!(windows) {
        format!("netstat -ano | findstr :{port}")
    } else if cfg!(target_os = "macos") {
        format!("lsof -nP -i :{port}")
    } else {
        format!("ss -ltnup 'sport = :{port}'")
    };
    format!("{who} shows which program has it; or use another port on both sides: -u PORT")
}

fn server_port(port: u16, bind: Option<IpAddr>) -> Finding {
    let at = bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let (tcp, udp) = match crate::engine::bind_server_sockets(bind, port) {
        Ok(pair) => pair,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Finding::new(
                "port",
                Verdict::Blocks,
                format!("{port} is taken by another program (or another EchoWarp)"),
            )
            .fix(who_has(port))
        }
        // Windows says "access denied" for a port another program holds for itself, or that
        // the system reserved (Hyper-V's excluded ranges).
        Err(e) if cfg!(windows) && e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Finding::new(
                "port",
                Verdict::Blocks,
                format!("{port} is taken by another program, or reserved by the system ({e})"),
            )
            .fix(format!(
                "{}; reserved ranges: netsh interface ipv4 show excludedportrange protocol=tcp",
                who_has(port)
            ))
        }
        Err(e) => {
            return Finding::new(
                "port",
                Verdict::Blocks,
                format!("cannot listen on {at} port {port}: {e}"),
            )
            .fix("use another port on both sides (-u PORT, above 1023), or another --bind address")
        }
    };
    // Reach it as a client on this machine would.
    let target = match at {
        a if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        a => a,
    };
    let to = SocketAddr::new(target, port);
    let tcp_ok = TcpStream::connect_timeout(&to, REACH).is_ok();
    let udp_ok = udp_round_trip(&udp, to);
    drop(tcp);
    match (tcp_ok, udp_ok) {
        (true, true) => Finding::new(
            "port",
            Verdict::Ok,
            format!("{port} is free, and TCP and UDP reach it at {target}"),
        ),
        (tcp, _) => Finding::new(
            "port",
            Verdict::Blocks,
            format!(
                "{port} is free, but {} sent to {target} does not arrive",
                if tcp { "UDP" } else { "TCP" }
            ),
        )
        .fix("a local firewall drops it: see the firewall line"),
    }
}

/// Sends a datagram from a fresh socket to `to` and reads it on `udp`.
fn udp_round_trip(udp: &UdpSocket, to: SocketAddr) -> bool {
    let from_any = match to {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let Ok(probe) = UdpSocket::bind(from_any) else {
        return false;
    };
    if probe.send_to(b"echowarp doctor", to).is_err() || udp.set_read_timeout(Some(REACH)).is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(udp.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"echowarp doctor")
}

fn server_reach(address: &str, port: u16) -> Finding {
    if address.is_empty() {
        return Finding::new("server", Verdict::Blocks, "no server address")
            .fix("give it with -a HOST (or server_address in the profile)");
    }
    let addrs: Vec<SocketAddr> = match std::net::ToSocketAddrs::to_socket_addrs(&(address, port)) {
        Ok(a) => a.collect(),
        Err(e) => {
            return Finding::new(
                "server",
                Verdict::Blocks,
                format!("cannot resolve {address}: {e}"),
            )
            .fix("check the name, or give the server's IP address with -a")
        }
    };
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, REACH) {
            Ok(_) => {
                return Finding::new("server", Verdict::Ok, format!("{a} accepts connections"))
            }
            Err(e) => last = Some((a, e)),
        }
    }
    let (said, fix) = match last {
        Some((a, e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => (
            format!("nothing listens at {a}"),
            "start the server there, on the same port (-u); `echowarp doctor` on the server checks its side",
        ),
        Some((a, e)) => (
            format!("no answer from {a} ({e})"),
            "a firewall on the server's side, or a wrong address: run `echowarp doctor` on the server",
        ),
        None => (
            format!("{address} has no address"),
            "check the name, or give the server's IP address with -a",
        ),
    };
    Finding::new("server", Verdict::Blocks, said).fix(fix)
}

/// Whether a program ran and succeeded (false when it is not installed).
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server needs its port open to other machines; a client needs nothing inbound (its
/// server's datagrams answer its own).
pub(super) fn firewall(profile: &Profile) -> Finding {
    let port = profile.port;
    if profile.role == Role::Client {
        return Finding::new("firewall", Verdict::Ok, "a client needs no inbound rule");
    }
    if cfg!(windows) {
        // The rule's name shows in the listing in every language; Wine's netsh, a stub,
        // succeeds with nothing to show.
        let listed = Command::new("netsh")
            .args(["advfirewall", "firewall", "show", "rule", "name=EchoWarp"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("EchoWarp")
            });
        return if listed {
            Finding::new(
                "firewall",
                Verdict::Ok,
                "an inbound rule named EchoWarp exists",
            )
        } else {
            Finding::new(
                "firewall",
                Verdict::Note,
                "no inbound rule named EchoWarp: Windows may ask, or drop other machines' connections",
            )
            .fix(format!(
                "as administrator: netsh advfirewall firewall add rule name=EchoWarp dir=in action=allow protocol=TCP localport={port} \
                 && netsh advfirewall firewall add rule name=EchoWarp dir=in action=allow protocol=UDP localport={port}"
            ))
        };
    }
    if cfg!(target_os = "macos") {
        return Finding::new(
            "firewall",
            Verdict::Note,
            "if the application firewall is on, allow EchoWarp when macOS asks",
        );
    }
    let ufw = std::fs::read_to_string("/etc/ufw/ufw.conf")
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "ENABLED=yes"));
    if ufw {
        return Finding::new(
            "firewall",
            Verdict::Note,
            format!("ufw is on: other machines reach port {port} only if a rule allows it"),
        )
        .fix(format!(
            "sudo ufw allow {port}/tcp && sudo ufw allow {port}/udp"
        ));
    }
    if succeeds("firewall-cmd", &["--state"]) {
        return Finding::new(
            "firewall",
            Verdict::Note,
            format!("firewalld runs: other machines reach port {port} only if its zone allows it"),
        )
        .fix(format!(
            "sudo firewall-cmd --permanent --add-port={port}/tcp --add-port={port}/udp && sudo firewall-cmd --reload"
        ));
    }
    Finding::new("firewall", Verdict::Ok, "neither ufw nor firewalld is on")
}

/// Whether the tray's notices can be shown.
pub(super) fn notifications() -> Finding {
    #[cfg(all(feature = "notifications", target_os = "linux"))]
    {
        match notify_rust::get_server_information() {
            Ok(info) => Finding::new(
                "notifications",
                Verdict::Ok,
                format!("{} {} on the session bus", info.name, info.version),
            ),
            Err(e) => Finding::new(
                "notifications",
                Verdict::Warn,
                format!("no notification service ({e}): the tray's notices go to the log only"),
            )
            .fix("start the desktop's notification service (or one such as dunst)"),
        }
    }
    #[cfg(all(feature = "notifications", windows))]
    {
        let key = format!(
            r"HKCU\Software\Classes\AppUserModelId\{}",
            crate::ui::tray::APP_USER_MODEL_ID
        );
        if succeeds("reg", &["query", &key]) {
            Finding::new(
                "notifications",
                Verdict::Ok,
                "EchoWarp is registered for toasts (its Start-menu shortcut)",
            )
        } else {
            Finding::new(
                "notifications",
                Verdict::Warn,
                "EchoWarp is not registered for toasts: the tray's notices go to the log only",
            )
            .fix("install EchoWarp with its MSI: the Start-menu shortcut registers it")
        }
    }
    #[cfg(all(feature = "notifications", target_os = "macos"))]
    {
        Finding::new(
            "notifications",
            Verdict::Ok,
            "Notification Center (macOS asks for permission at the first notice)",
        )
    }
    #[cfg(not(feature = "notifications"))]
    {
        Finding::new(
            "notifications",
            Verdict::Note,
            "this build has no desktop notifications: the tray's notices go to the log",
        )
    }
}

/// Whether the tray has somewhere to show.
pub(super) fn tray_host() -> Finding {
    #[cfg(feature = "tray")]
    {
        if cfg!(windows) {
            return Finding::new("tray", Verdict::Ok, "the taskbar's notification area");
        }
        if cfg!(target_os = "macos") {
            return Finding::new("tray", Verdict::Ok, "the menu bar");
        }
        if !crate::ui::tray::desktop_present() {
            return Finding::new(
                "tray",
                Verdict::Note,
                "no desktop session (no DISPLAY or WAYLAND_DISPLAY): the tray needs one; headless runs do not",
            );
        }
        let asked = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply=literal",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.kde.StatusNotifierWatcher",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match asked {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("true") => {
                Finding::new("tray", Verdict::Ok, "a StatusNotifier host shows tray icons")
            }
            Ok(o) if o.status.success() => Finding::new(
                "tray",
                Verdict::Warn,
                "no StatusNotifier host: the icon shows only in an X11 system tray (XEmbed)",
            )
            .fix("GNOME: enable the AppIndicator extension (gnome-shell-extension-appindicator); elsewhere, add the panel's system tray"),
            Ok(_) => Finding::new(
                "tray",
                Verdict::Warn,
                "no session bus answers: the tray's icon and menu need one",
            )
            .fix("run EchoWarp inside the desktop session (DBUS_SESSION_BUS_ADDRESS set)"),
            Err(_) => Finding::new(
                "tray",
                Verdict::Note,
                "cannot ask the session bus for a tray host (dbus-send is not installed)",
            ),
        }
    }
    #[cfg(not(feature = "tray"))]
    {
        Finding::new("tray", Verdict::Note, "this build has no tray (headless)")
    }
}
