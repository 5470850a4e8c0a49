//! The control channel through real processes: passwords, bans, version checks, slots,
//! reconnection, and the exit codes of DESIGN.md §3.1.
//!
//! Needs: root and tcpdump (the password test reads the loopback traffic); the release binary
//! (`ECHOWARP_RELEASE_BIN`, built by scripts/test.sh).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn server(sb: &Sandbox, args: &[&str]) -> (Proc, String) {
    let port = free_port().to_string();
    let mut all = vec!["-u", port.as_str()];
    all.extend_from_slice(args);
    let mut p = sb.spawn(&all);
    p.wait_for("listening on", SECS(10));
    (p, port)
}

/// A client with `password`, once it reports its session up.
fn connected_client(sb: &Sandbox, port: &str, password: &str) -> Proc {
    let mut c = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        port,
        "-p",
        password,
        "-d",
        "null",
    ]);
    c.wait_for("connected to", SECS(10));
    c
}

/// Opens a raw TCP connection, sends `bytes`, and returns everything the server says before
/// closing.
fn raw_exchange(port: &str, bytes: &[u8]) -> String {
    let mut raw =
        TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("connect");
    raw.set_read_timeout(Some(SECS(5))).expect("timeout");
    raw.write_all(bytes).expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).expect("read");
    answer
}

/// Captures loopback traffic on one port with tcpdump and rebuilds the packets' bytes from its
/// hex dump (`-x`). (Writing a pcap file with `-w` captures nothing on some sandboxed kernels;
/// the live dump works everywhere.)
struct Capture {
    child: std::process::Child,
    dump: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    packets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Capture {
    fn start(port: &str) -> Self {
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-l", "-x", "-s", "0", "port", port])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump is installed by the test command (.ci/run)");
        let mut err = child.stderr.take().expect("stderr");
        let mut seen = String::new();
        let deadline = Instant::now() + SECS(10);
        let mut buf = [0u8; 256];
        while !seen.contains("listening on") {
            assert!(Instant::now() < deadline, "tcpdump did not start: {seen}");
            let n = err.read(&mut buf).expect("tcpdump stderr");
            assert!(n > 0, "tcpdump exited: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        let dump = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let packets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, n) = (dump.clone(), packets.clone());
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let Some((offset, hex)) = line.trim_start().split_once(':') else {
                    continue;
                };
                if !offset.starts_with("0x") {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                let mut bytes = d.lock().expect("lock");
                for group in hex.split_whitespace() {
                    for pair in group.as_bytes().chunks(2) {
                        if let Ok(b) =
                            u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("zz"), 16)
                        {
                            bytes.push(b);
                        }
                    }
                }
            }
        });
        Self {
            child,
            dump,
            packets,
        }
    }

    /// Stops the capture; returns the packets' bytes and how many packets there were.
    fn stop(mut self) -> (Vec<u8>, usize) {
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let bytes = self.dump.lock().expect("lock").clone();
        (
            bytes,
            self.packets.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn wrong_password_exits_3_and_the_password_never_crosses_the_wire() {
    let sb = Sandbox::new();
    let password = "Correct-Horse-9137";
    let (mut srv, port) = server(&sb, &["-d", "tone:440", "-p", password, "-r", "0"]);
    let cap = Capture::start(&port);
    let (code, err) = one_attempt(&sb, &port, "Wrong-Guess-5521");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401 Unauthorized (Invalid password)"), "{err}");
    // A good session too, so the capture holds a whole handshake and audio.
    let mut good = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-p",
        password,
        "-d",
        "null",
    ]);
    good.wait_for("connected to", SECS(10));
    std::thread::sleep(Duration::from_millis(300));
    good.signal("TERM");
    assert!(good.wait_timeout(SECS(10)).success());
    let (pcap, packets) = cap.stop();
    assert!(
        packets > 50 && pcap.len() > 20_000,
        "capture too small ({packets} packets, {} bytes)",
        pcap.len()
    );
    assert!(
        contains(&pcap, b"ECHOWARP/1.1"),
        "the capture must hold the identification lines"
    );
    for secret in [password, "Wrong-Guess-5521"] {
        let b64 = base64(secret.as_bytes());
        for form in [secret.as_bytes(), b64.as_bytes(), &secret.as_bytes()[..8]] {
            assert!(
                !contains(&pcap, form),
                "password bytes {:?} found on the wire",
                String::from_utf8_lossy(form)
            );
        }
    }
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

#[test]
fn repeated_failures_ban_the_ip_across_restarts_until_unbanned() {
    let sb = Sandbox::new();
    let (mut srv, port) = server(&sb, &["-d", "tone:440", "-p", "right", "-r", "2"]);
    for _ in 0..2 {
        assert_eq!(one_attempt(&sb, &port, "wrong").0, 3);
    }
    let (code, err) = one_attempt(&sb, &port, "right");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("403 Forbidden (Client is banned)"), "{err}");
    // A raw connection gets the 403 line at once, before saying anything.
    assert_eq!(
        raw_exchange(&port, b""),
        "403 Forbidden (Client is banned)\n"
    );
    let list = std::fs::read_to_string(sb.ban_list()).expect("ban list written");
    assert_eq!(list.lines().collect::<Vec<_>>(), ["127.0.0.1"]);

    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
    let (mut srv, port) = server(&sb, &["-d", "tone:440", "-p", "right", "-r", "2"]);
    assert_eq!(
        one_attempt(&sb, &port, "right").0,
        4,
        "still banned after a restart"
    );

    let (code, out, _) = sb.run(&["--unban", "127.0.0.1"], SECS(10));
    assert_eq!((code, out.trim()), (0, "unbanned 127.0.0.1"));
    let mut ok = connected_client(&sb, &port, "right");
    ok.signal("INT");
    assert!(ok.wait_timeout(SECS(10)).success());
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

#[test]
fn reconnect_zero_bans_nobody() {
    let sb = Sandbox::new();
    let (mut srv, port) = server(&sb, &["-d", "null", "-p", "right", "-r", "0"]);
    for _ in 0..6 {
        assert_eq!(one_attempt(&sb, &port, "wrong").0, 3);
    }
    let ok = connected_client(&sb, &port, "right");
    drop(ok);
    assert!(
        !sb.ban_list().exists()
            || std::fs::read_to_string(sb.ban_list())
                .expect("read")
                .trim()
                .is_empty()
    );
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

#[test]
fn version_mismatch_409_both_ways() {
    let sb = Sandbox::new();
    let (mut srv, port) = server(&sb, &["-d", "null", "-r", "0"]);
    let answer = raw_exchange(&port, b"ECHOWARP/99.0 x\n");
    assert!(answer.starts_with("409 Conflict"), "{answer:?}");
    // Garbage gets 400.
    assert_eq!(
        raw_exchange(&port, b"GET / HTTP/1.0\r\n"),
        "400 Bad Request\n"
    );
    // A client of another major exits 5.
    let (code, _, err) = sb.run(
        &[
            "-c",
            "-a",
            "127.0.0.1",
            "-u",
            &port,
            "-d",
            "null",
            "--protocol-major",
            "2",
        ],
        SECS(20),
    );
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("409 Conflict (Client version mismatch: server 1.1, client 2.1)"),
        "{err}"
    );
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
    // A server of another major: the client exits 5 too.
    let (mut srv, port) = server(&sb, &["-d", "null", "--protocol-major", "3"]);
    let (code, _, err) = sb.run(
        &["-c", "-a", "127.0.0.1", "-u", &port, "-d", "null"],
        SECS(20),
    );
    assert_eq!(code, 5, "{err}");
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

#[test]
fn a_killed_client_frees_its_slot_within_6_seconds() {
    let sb = Sandbox::new();
    let (mut srv, port) = server(&sb, &["-d", "tone:440", "-w", "1"]);
    let mut a = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &port, "-d", "null"]);
    a.wait_for("connected to", SECS(10));
    // While A holds the only slot, another client is told the server is full.
    let (code, err) = one_attempt(&sb, &port, "");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("503 Service Unavailable (Server is full)"),
        "{err}"
    );
    a.signal("KILL");
    let killed = Instant::now();
    let mut b = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-d",
        "null",
        "-r",
        "0",
    ]);
    b.wait_for("connected to", SECS(6));
    assert!(
        killed.elapsed() < SECS(6),
        "slot freed after {:?}",
        killed.elapsed()
    );
    drop(b);
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

#[test]
fn the_client_reconnects_after_a_server_restart_and_audio_resumes() {
    let sb = Sandbox::new();
    let (mut srv, port) = server(&sb, &["-d", "tone:1000"]);
    let mut c = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-d",
        "wav:rec.wav",
        "-r",
        "0",
    ]);
    c.wait_for("connected to", SECS(10));
    srv.signal("KILL");
    let _ = srv.wait_timeout(SECS(5));
    c.wait_for("reconnecting", SECS(10));
    let size_at_loss = std::fs::metadata(sb.path("rec.wav"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut srv = sb.spawn(&["-u", &port, "-d", "tone:1000"]);
    srv.wait_for("listening on", SECS(10));
    c.wait_for_n("connected to", 2, SECS(15));
    // Audio resumes: the recording grows by a quarter second of tone after the reconnection.
    let deadline = Instant::now() + SECS(10);
    while std::fs::metadata(sb.path("rec.wav"))
        .map(|m| m.len())
        .unwrap_or(0)
        < size_at_loss + 48_000
    {
        assert!(
            Instant::now() < deadline,
            "no audio after reconnecting:\n{}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.signal("TERM");
    assert!(c.wait_timeout(SECS(10)).success(), "{}", c.stderr());
    let (_, samples) = read_wav(&sb.path("rec.wav"));
    let tail = &samples[samples.len() - 9_600..];
    let peak = tail.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(
        peak > 15_000,
        "the last 0.1 s holds the tone again (peak {peak})"
    );
    srv.signal("TERM");
    assert!(srv.wait_timeout(SECS(10)).success());
}

#[test]
fn a_server_gone_for_good_gives_exit_6_with_hints() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let started = Instant::now();
    let (code, _, err) = sb.run(
        &[
            "-c",
            "-a",
            "127.0.0.1",
            "-u",
            &port,
            "-r",
            "3",
            "-d",
            "null",
        ],
        SECS(30),
    );
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("after 3 attempts"), "{err}");
    for hint in ["server running", "address", "port", "firewall", "VPN"] {
        assert!(err.contains(hint), "hint {hint:?} missing:\n{err}");
    }
    // Backoff: 0.5 s then 1 s between the three attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "no backoff: {:?}",
        started.elapsed()
    );
}
