//! The limits around the cryptography (DESIGN.md §3.4), tried against the real binary from many
//! source addresses (127.0.0.0/8 on loopback; a network namespace for public ones): idle and
//! trickling connections, password guessing from rotating addresses, failures from thousands
//! of addresses, a rogue server, a server without a password. Rates and times are measured by
//! bench/attack.sh; these tests assert what must hold, by counts.
//!
//! Needs: root and iproute2 (network namespaces, AnyIP routes); the release binary
//! (`ECHOWARP_RELEASE_BIN`).

// Network namespaces, /proc and AnyIP routes are Linux's.
#![cfg(target_os = "linux")]

mod common;
use common::login::{
    connect_between, connect_from, login_between, login_from, occupy, read_line, send_frame, Login,
};
use common::*;

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use echowarp::protocol::frame::Message;
use echowarp::protocol::ident::Ident;
use echowarp::protocol::session::{LoginFailure, ServerEvent, ServerSession, Session};
use echowarp::protocol::Password;

/// The file's text once it holds `line` (the server writes its ban list off the connection
/// path), or as it is when `within` has passed.
fn wait_for_line(path: &std::path::Path, line: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_and_trickling_sources_are_penalised_and_a_login_still_gets_in() {
    let sb = Sandbox::release();
    let port = free_port();
    let p = port.to_string();
    let mut server = sb.spawn(&["-d", "tone:440", "-u", &p, "-p", "pw", "-w", "64", "-v"]);
    server.wait_for("listening on", SECS(10));
    let stop = Arc::new(AtomicBool::new(false));
    // 32 idle and 32 trickling addresses: half of each in one /24, half spread over /24s of
    // their own. None shares the /24 of the logins below.
    let idle: Vec<String> = (1..=16)
        .map(|i| format!("127.0.5.{i}"))
        .chain((10..26).map(|n| format!("127.{n}.0.1")))
        .collect();
    let slow: Vec<String> = (1..=16)
        .map(|i| format!("127.0.6.{i}"))
        .chain((30..46).map(|n| format!("127.{n}.0.1")))
        .collect();
    let attackers = [
        occupy(idle, port, 4, false, stop.clone()),
        occupy(slow, port, 4, true, stop.clone()),
    ];
    thread::sleep(SECS(1));
    let mut failed = Vec::new();
    for n in 1..=24 {
        let started = Instant::now();
        let login = login_from(&format!("127.100.0.{n}"), port, "pw", SECS(5));
        eprintln!(
            "login {n}: {:?} in {:?}",
            login.confirmed(),
            started.elapsed()
        );
        if !login.confirmed() {
            failed.push((n, format!("{login:?}")));
        }
        drop(login);
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let made: usize = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .sum();
    eprintln!("the attackers opened {made} connections");
    assert!(failed.is_empty(), "logins refused: {failed:?}");
    let log = server.stderr();
    assert!(
        log.contains("not admitted: its prefix is penalised"),
        "no source was penalised:\n{log}"
    );
    assert!(
        log.contains("not admitted: its address holds all the slots"),
        "no address was held to its slots"
    );
    server.stop();
}

#[test]
fn guessing_from_rotating_addresses_is_slowed_and_its_prefix_banned() {
    let sb = Sandbox::release();
    let port = free_port();
    let p = port.to_string();
    let mut server = sb.spawn(&["-d", "tone:440", "-u", &p, "-p", "secret", "-w", "8"]);
    server.wait_for("listening on", SECS(10));
    // The laptop that uses this server every day logged in before the attack.
    assert!(login_from("127.0.0.1", port, "secret", SECS(5)).confirmed());

    // 26 addresses of one /24, four guesses each in turn, as fast as the server answers.
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut refused = 0;
    let mut banned_after = None;
    let mut n = 0;
    while started.elapsed() < SECS(20) && banned_after.is_none() {
        let addr = format!("127.0.7.{}", (n / 4) % 26 + 1);
        n += 1;
        match login_from(&addr, port, &format!("guess{n}"), SECS(8)) {
            Login::WrongPassword => answered.push(started.elapsed()),
            Login::Refused(line) if line.starts_with("403") => banned_after = Some(answered.len()),
            Login::Refused(line) if line.starts_with("503") => refused += 1,
            other => panic!("guess {n} from {addr}: {other:?}"),
        }
    }
    eprintln!(
        "{} guesses answered, {refused} refused with 503, banned after {banned_after:?}, in {:?}",
        answered.len(),
        started.elapsed()
    );
    let answered_before_ban = banned_after.expect("the guessing prefix was banned");
    assert!(answered_before_ban <= 20, "{answered_before_ban} guesses");
    // Past the free budget, guesses are answered no faster than one a second.
    let free = 5;
    if answered.len() > free + 1 {
        let slow = &answered[free..];
        let span = slow[slow.len() - 1] - slow[0];
        assert!(
            span >= SECS(slow.len() as u64 - 2),
            "{} guesses in {span:?}",
            slow.len()
        );
    }
    let list = wait_for_line(&sb.ban_list(), "127.0.7.0/24", SECS(10));
    assert!(list.lines().any(|l| l == "127.0.7.0/24"), "{list}");
    // Everyone in that /24 is refused, at once; the known laptop, and a newcomer from
    // elsewhere, still log in.
    match login_from("127.0.7.200", port, "secret", SECS(5)) {
        Login::Refused(line) => assert!(line.starts_with("403"), "{line}"),
        other => panic!("{other:?}"),
    }
    assert!(login_from("127.0.0.1", port, "secret", SECS(5)).confirmed());
    let mut newcomer = None;
    for _ in 0..10 {
        match login_from("127.0.9.1", port, "secret", SECS(5)) {
            Login::Refused(line) if line.starts_with("503") => thread::sleep(SECS(1)),
            other => {
                newcomer = Some(other);
                break;
            }
        }
    }
    assert!(
        newcomer.as_ref().is_some_and(Login::confirmed),
        "{newcomer:?}"
    );
    server.stop();
}

#[test]
fn failures_from_thousands_of_addresses_leave_the_ban_list_bounded() {
    let sb = Sandbox::release();
    let port = free_port();
    let p = port.to_string();
    let mut server = sb.spawn(&["-d", "tone:440", "-u", &p, "-p", "pw", "-r", "1"]);
    server.wait_for("listening on", SECS(10));
    let rss_idle = server.rss_kib();
    // One bad line from each of 3000 addresses, each in a /24 of its own, then three from one
    // /24: each address is banned, and that /24 as a whole.
    let addrs = (0..3000u32)
        .map(|i| format!("127.{}.{}.1", 50 + i / 256, i % 256))
        .chain((1..=3).map(|i| format!("127.200.0.{i}")));
    let mut sent = 0;
    for a in addrs {
        if let Ok(mut t) = connect_from(&a, port) {
            let _ = t.write_all(b"GET / HTTP/1.1\n");
            let answer = read_line(&mut t, SECS(5)).unwrap_or_default();
            assert!(
                answer.starts_with("400") || answer.starts_with("503"),
                "{a}: {answer:?}"
            );
            sent += 1;
        }
    }
    assert!(sent >= 3000);
    let text = wait_for_line(&sb.ban_list(), "127.200.0.0/24", SECS(10));
    let rss = server.rss_kib();
    eprintln!(
        "ban list: {} lines, {} bytes; server RSS {rss_idle} KiB idle, {rss} KiB after",
        text.lines().count(),
        text.len()
    );
    assert!(text.lines().any(|l| l == "127.200.0.0/24"), "{text}");
    assert!(text.lines().count() >= 2900 && text.len() < 1 << 20);
    assert!(rss < rss_idle + 16 * 1024, "RSS {rss_idle} -> {rss} KiB");
    // A hand edit is still picked up: unban one and it is gone from the file the server keeps.
    let (code, out, _) = sb.run(&["--unban", "127.200.0.0/24"], SECS(10));
    assert_eq!(code, 0);
    assert!(out.contains("unbanned 127.200.0.0/24"), "{out}");
    assert!(login_from("127.200.0.9", port, "pw", SECS(5)).confirmed());
    server.stop();
}

/// What a rogue server does after the client's key confirmation.
#[derive(Clone, Copy, Debug)]
enum Rogue {
    Silent,
    Closes,
    Garbles,
}

/// Runs the real server session with a guessed password over `t` up to the client's key
/// confirmation, and withholds what the session answers to it (the 401). False if the client
/// never got that far.
fn rogue_login(t: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let ours = Ident {
        app_version: "rogue".into(),
        ..Ident::ours(None)
    };
    let mut s = ServerSession::new(ours, Password::from("a guess"), SECS(1), Instant::now());
    loop {
        while let Some(event) = s.poll_event() {
            match event {
                ServerEvent::Identified(_) => s.accept(Instant::now(), None),
                // The client's confirmation is in; the 401 the session queued stays unsent.
                ServerEvent::LoginFailed(LoginFailure::WrongPassword) => return true,
                _ => return false,
            }
        }
        while let Some(bytes) = s.poll_transmit() {
            if t.write_all(&bytes).is_err() {
                return false;
            }
        }
        let _ = t.set_read_timeout(Some(SECS(5)));
        let mut buf = [0u8; 1024];
        match t.read(&mut buf) {
            Ok(n) if n > 0 => s.handle_input(Instant::now(), &buf[..n]),
            _ => return false,
        }
    }
}

/// A server that knows no password: it runs the PAKE with a guess, takes the client's key
/// confirmation (enough to test one guess offline) and then behaves as `how`. Returns its port
/// and the number of connections it has had.
fn rogue_server(how: Rogue) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut t) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                if !rogue_login(&mut t) {
                    return;
                }
                match how {
                    Rogue::Silent => thread::sleep(SECS(30)),
                    Rogue::Closes => {}
                    Rogue::Garbles => {
                        send_frame(&mut t, &Message::UdpReady);
                        thread::sleep(SECS(2));
                    }
                }
            });
        }
    });
    (port, count)
}

#[test]
fn a_rogue_server_gets_one_guess_per_client_start() {
    let sb = Sandbox::release();
    let runs: Vec<_> = [Rogue::Silent, Rogue::Closes, Rogue::Garbles]
        .into_iter()
        .map(|how| {
            let (port, count) = rogue_server(how);
            let p = port.to_string();
            // -r 0: reconnect for ever, as a tray client does.
            let client = sb.spawn(&[
                "-c",
                "-a",
                "127.0.0.1",
                "-u",
                &p,
                "-p",
                "pw",
                "-r",
                "0",
                "-d",
                "null",
            ]);
            (how, client, count)
        })
        .collect();
    for (how, mut client, count) in runs {
        let status = client.wait_timeout(SECS(20));
        let err = client.stderr();
        assert_eq!(status.code(), Some(3), "{how:?}: {err}");
        assert!(
            err.contains("error: 401 Unauthorized (Invalid password)")
                && err.contains("the server did not confirm the password"),
            "{how:?}: {err}"
        );
        thread::sleep(Duration::from_millis(500));
        assert_eq!(count.load(Ordering::SeqCst), 1, "{how:?}: connections");
    }
}

/// A network namespace of the test's own, with a public IPv4 and IPv6 address on its loopback.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("ew-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?} (needs root and iproute2): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Self(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.0, "addr", "add", "203.0.113.1/32", "dev", "lo"]);
        ip(&[
            "-n",
            &ns.0,
            "-6",
            "addr",
            "add",
            "2001:db8::1/128",
            "dev",
            "lo",
            "nodad",
        ]);
        // Any address of 2001:db8::/48 is this host's (AnyIP), so a test thread in the
        // namespace can connect from as many /64s as it likes.
        ip(&[
            "-n",
            &ns.0,
            "-6",
            "route",
            "add",
            "local",
            "2001:db8::/48",
            "dev",
            "lo",
        ]);
        let sysctl = Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
            .arg("net.ipv6.ip_nonlocal_bind=1")
            .status()
            .expect("run sysctl");
        assert!(sysctl.success(), "sysctl net.ipv6.ip_nonlocal_bind");
        ns
    }

    /// Moves the calling thread into the namespace: the sockets it makes from then on are
    /// the namespace's (a network namespace belongs to a thread, not to the process).
    fn enter(name: &str) {
        let f = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
    }

    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.0]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_server_without_a_password_serves_local_networks_only_unless_allowed() {
    let ns = Netns::new("anon");
    let sb = Sandbox::release();
    let w = ns.wrapper();
    let client = |addr: &str| {
        let c = sb.command_via(
            &w,
            &["-c", "-a", addr, "-u", "4415", "-d", "null", "-r", "1"],
        );
        Proc::spawn(c, &["client of", addr])
    };
    let mut server = Proc::spawn(
        sb.command_via(&w, &["-d", "tone:440", "-u", "4415"]),
        &["server"],
    );
    server.wait_for("listening on", SECS(10));
    assert!(
        server
            .stderr()
            .contains("no password: anyone on a local network"),
        "{}",
        server.stderr()
    );
    for public in ["203.0.113.1", "2001:db8::1"] {
        let mut c = client(public);
        let status = c.wait_timeout(SECS(20));
        assert_eq!(status.code(), Some(4), "{public}: {}", c.stderr());
        assert!(
            c.stderr().contains(
                "error: 403 Forbidden (Password required from outside the local network)"
            ),
            "{}",
            c.stderr()
        );
    }
    let mut local = client("127.0.0.1");
    local.wait_for("connected to", SECS(10));
    local.stop();
    server.stop();

    let mut open = Proc::spawn(
        sb.command_via(&w, &["-d", "tone:440", "-u", "4415", "--allow-anonymous"]),
        &["server --allow-anonymous"],
    );
    open.wait_for("listening on", SECS(10));
    assert!(open
        .stderr()
        .contains("from any address (--allow-anonymous)"));
    let mut c = client("203.0.113.1");
    c.wait_for("connected to", SECS(10));
    c.stop();
    open.stop();
}

#[test]
fn ipv6_sources_are_held_and_banned_per_64() {
    let ns = Netns::new("v6");
    let sb = Sandbox::release();
    let w = ns.wrapper();
    let mut server = Proc::spawn(
        sb.command_via(
            &w,
            &[
                "-d", "tone:440", "-u", "4415", "-p", "secret", "-w", "8", "-v",
            ],
        ),
        &["server"],
    );
    server.wait_for("listening on", SECS(10));
    let name = ns.0.clone();
    let (legit, guessed) = thread::spawn(move || {
        Netns::enter(&name);
        let server: std::net::SocketAddr = "[2001:db8::1]:4415".parse().expect("address");
        // Four addresses of one /64 try to hold three connections each, silently: the /64
        // gets 8 slots, not 12; a client of another /64 still logs in.
        let held: Vec<_> = (1..=4)
            .flat_map(|i| (0..3).map(move |_| format!("2001:db8:0:1::{i}")))
            .filter_map(|a| connect_between(&a, server).ok())
            .collect();
        let legit = login_between("2001:db8:0:2::1", server, "secret", SECS(5)).confirmed();
        drop(held);
        // 26 addresses of another /64 guess in turn, until refused as banned.
        let mut guessed = 0;
        for n in 0..400 {
            let a = format!("2001:db8:0:3::{:x}", (n / 4) % 26 + 1);
            match login_between(&a, server, &format!("guess{n}"), SECS(8)) {
                Login::WrongPassword => guessed += 1,
                Login::Refused(line) if line.starts_with("403") => return (legit, Some(guessed)),
                Login::Refused(_) => thread::sleep(Duration::from_millis(50)),
                other => panic!("guess {n} from {a}: {other:?}"),
            }
        }
        (legit, None)
    })
    .join()
    .expect("the client thread");
    assert!(legit, "a client of another /64 was kept out");
    let log = server.stderr();
    assert!(
        log.contains("not admitted: its prefix holds all the slots one prefix may"),
        "{log}"
    );
    let guessed = guessed.expect("the guessing /64 was banned");
    assert!(guessed <= 20, "{guessed} guesses answered");
    let list = wait_for_line(&sb.ban_list(), "2001:db8:0:3::/64", SECS(10));
    assert!(list.lines().any(|l| l == "2001:db8:0:3::/64"), "{list}");
    server.stop();
}

#[test]
fn a_password_from_stdin_or_the_environment_stays_out_of_the_process_list() {
    let sb = Sandbox::release();
    let port = free_port();
    let p = port.to_string();
    let secret = "correct horse from a pipe";
    // Room for every client below at once: a session that just ended may not be gone yet.
    let mut cmd = sb.command(&["-d", "tone:440", "-u", &p, "-p", "-", "-w", "8"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut server = Proc::spawn(cmd, &["server", "-p", "-"]);
    let mut stdin = server.child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{secret}\n").as_bytes())
        .expect("write the password");
    server.wait_for("listening on", SECS(10));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains("horse"));
    // The line read is the password, without its newline.
    assert!(login_from("127.0.0.1", port, secret, SECS(5)).confirmed());
    assert!(matches!(
        login_from("127.0.0.1", port, &format!("{secret}\n"), SECS(5)),
        Login::WrongPassword
    ));

    let client_args = ["-c", "-a", "127.0.0.1", "-u", &p, "-d", "null", "-r", "1"];
    let mut with_env = sb.command(&client_args);
    with_env.env("ECHOWARP_PASSWORD", secret);
    let mut client = Proc::spawn(with_env, &client_args);
    client.wait_for("connected to", SECS(10));
    client.stop();
    // -p wins over the environment.
    let mut wrong = sb.command(&[&client_args[..], &["-p", "not it"]].concat());
    wrong.env("ECHOWARP_PASSWORD", secret);
    let mut client = Proc::spawn(wrong, &client_args);
    let status = client.wait_timeout(SECS(20));
    assert_eq!(status.code(), Some(3), "{}", client.stderr());
    // `-p -` with nothing on standard input is bad usage.
    let (code, _, err) = sb.run(
        &client_args
            .iter()
            .copied()
            .chain(["-p", "-"])
            .collect::<Vec<_>>(),
        SECS(10),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-p -"), "{err}");
    drop(stdin);
    server.stop();
}
