//! The server's limits against attackers with many addresses, measured against a real server
//! (the release build, or `ECHOWARP_BIN`) on loopback, where 127.0.0.0/8 gives as many source
//! addresses as an attack needs. It prints figures; `tests/policy.rs` asserts what must hold.
//!
//! 1. 4 and 32 addresses hold connections open, idle or sending a byte every 300 ms, while a
//!    legitimate client (its own /24) logs in 20 times: the share that got in, and how long
//!    each took.
//! 2. Guessing from 26 addresses in turn, 4 guesses each, as fast as the server answers: first
//!    from one /24, then from 26 /24s (where no prefix ban applies and only the server-wide
//!    budget holds). Answered guesses a second over the minute after the first 20 failures,
//!    and meanwhile logins of a client that logged in before (trusted) and of one new to the
//!    server.
//! 3. One bad line from each of 10,000 addresses, each in a /24 of its own (`-r 1`: one failure
//!    bans): the ban list's size and the server's RSS against its idle figure.
//!
//! Run: `bash bench/attack.sh` (about 5 minutes; Linux only, as it reads /proc).

#[cfg(target_os = "linux")]
#[path = "../tests/common/login.rs"]
#[allow(dead_code)]
mod login;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the attack bench runs on Linux only (it reads /proc)");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::login::{connect_from, login_from, occupy, read_line, Login};

    const PASSWORD: &str = "correct horse";

    fn binary() -> PathBuf {
        if let Some(b) = std::env::var_os("ECHOWARP_BIN") {
            return PathBuf::from(b);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(root)
            .status()
            .expect("cargo");
        assert!(status.success(), "cargo build --release failed");
        root.join("target/release/echowarp")
    }

    struct Server {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Server {
        fn start(bin: &Path, extra: &[&str]) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let p = port.to_string();
            let mut child = Command::new(bin)
                .args(["-d", "tone:440", "-u", &p, "-p", PASSWORD, "-w", "64"])
                .args(extra)
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the server");
            let err = child.stderr.take().expect("stderr");
            // Wait for its port, then keep draining its stderr.
            let (tx, rx) = std::sync::mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the server listens");
            Self { child, port, dir }
        }

        fn rss_kib(&self) -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                .unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }

        fn ban_list(&self) -> PathBuf {
            self.dir.path().join("data/echowarp/echowarp_ban_list.txt")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn median(v: &mut [Duration]) -> Duration {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    fn ms(d: Duration) -> String {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }

    fn slots(bin: &Path) {
        println!("\n== 1. idle and trickling connections against a legitimate client's logins");
        println!(
            "{:<34} {:>8} {:>10} {:>10} {:>12}",
            "attack", "logins", "median", "slowest", "connections"
        );
        for n in [4usize, 32] {
            for trickle in [false, true] {
                let server = Server::start(bin, &[]);
                // Half in one /24, half in /24s of their own (all of 4 in one /24).
                let addrs: Vec<String> = (0..n)
                    .map(|i| {
                        if i < n.div_ceil(2) || n == 4 {
                            format!("127.0.5.{}", i + 1)
                        } else {
                            format!("127.{}.0.1", 10 + i)
                        }
                    })
                    .collect();
                let stop = Arc::new(AtomicBool::new(false));
                let attacker = occupy(addrs, server.port, 8, trickle, stop.clone());
                thread::sleep(Duration::from_secs(2));
                let mut ok = 0;
                let mut times = Vec::new();
                for _ in 0..20 {
                    let started = Instant::now();
                    let login =
                        login_from("127.100.0.1", server.port, PASSWORD, Duration::from_secs(5));
                    let took = started.elapsed();
                    if login.confirmed() && took <= Duration::from_secs(2) {
                        ok += 1;
                    }
                    times.push(took);
                    drop(login);
                    thread::sleep(Duration::from_millis(500));
                }
                stop.store(true, Ordering::Relaxed);
                let made = attacker.join().expect("attacker");
                let slowest = times.iter().max().copied().unwrap_or_default();
                let what = format!(
                    "{n} addresses, {}",
                    if trickle { "trickling" } else { "idle" }
                );
                println!(
                    "{what:<34} {:>7}% {:>10} {:>10} {made:>12}",
                    ok * 100 / 20,
                    ms(median(&mut times)),
                    ms(slowest),
                );
            }
        }
        println!("(logins: the share confirmed within 2 s; connections: what the attacker opened)");
    }

    /// Guesses from `addrs` in turn (4 each) for `after_budget` past the first 20 failures,
    /// while a trusted and a new client log in every 5 s.
    fn guessing(bin: &Path, label: &str, addrs: &[String], after_budget: Duration) {
        let server = Server::start(bin, &["-r", "5"]);
        assert!(login_from("127.0.0.1", server.port, PASSWORD, Duration::from_secs(5)).confirmed());
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let was_banned = Arc::new(AtomicBool::new(false));
        let (port, a2, s2, addrs2) = (server.port, answered.clone(), stop.clone(), addrs.to_vec());
        let b2 = was_banned.clone();
        let started = Instant::now();
        let guesser = thread::spawn(move || {
            let (mut n, mut refused, mut banned) = (0usize, 0usize, 0usize);
            let mut marks = Vec::new();
            while !s2.load(Ordering::Relaxed) {
                let addr = &addrs2[(n / 4) % addrs2.len()];
                n += 1;
                match login_from(addr, port, &format!("guess{n}"), Duration::from_secs(8)) {
                    Login::WrongPassword => {
                        a2.fetch_add(1, Ordering::Relaxed);
                        marks.push(started.elapsed());
                    }
                    Login::Confirmed { .. } => panic!("a guess was right"),
                    other => {
                        if matches!(other, Login::Refused(ref l) if l.starts_with("403")) {
                            b2.store(true, Ordering::Relaxed);
                            banned += 1;
                        } else {
                            refused += 1;
                        }
                        // Refusals come back at once: retry at 100 a second, not flat out, so
                        // that the bench's own load on two cores does not become the figure.
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            (marks, refused, banned)
        });
        // Wait for the first 20 failures (or a ban, which may come first), then measure.
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.load(Ordering::Relaxed) < 20
            && !was_banned.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
        let t20 = started.elapsed();
        let mut trusted = Vec::new();
        let mut newcomer = Vec::new();
        let mut trusted_ok = 0;
        let mut new_ok = 0;
        let until = Instant::now() + after_budget;
        let mut k = 0;
        while Instant::now() < until {
            k += 1;
            let t = Instant::now();
            if login_from("127.0.0.1", server.port, PASSWORD, Duration::from_secs(5)).confirmed() {
                trusted_ok += 1;
            }
            trusted.push(t.elapsed());
            let t = Instant::now();
            if login_from(
                &format!("127.101.{k}.1"),
                server.port,
                PASSWORD,
                Duration::from_secs(5),
            )
            .confirmed()
            {
                new_ok += 1;
            }
            newcomer.push(t.elapsed());
            thread::sleep(Duration::from_secs(5).saturating_sub(t.elapsed()));
        }
        stop.store(true, Ordering::Relaxed);
        let (marks, refused, banned) = guesser.join().expect("guesser");
        let window = (t20, t20 + after_budget);
        let in_window = marks
            .iter()
            .filter(|m| **m > window.0 && **m <= window.1)
            .count();
        let rate = in_window as f64 / after_budget.as_secs_f64();
        let list = std::fs::read_to_string(server.ban_list()).unwrap_or_default();
        println!(
            "{label:<24} 20 failures (or a ban) in {:>5.1} s, then {in_window:>3} guesses answered in {:.0} s: {rate:.2}/s; \
             {refused} refused (503/none), {banned} refused as banned; ban list: {} lines{}",
            t20.as_secs_f64(),
            after_budget.as_secs_f64(),
            list.lines().count(),
            list.lines().filter(|l| l.contains('/')).map(|l| format!(" [{l}]")).collect::<String>(),
        );
        println!(
            "{:<24} trusted client: {trusted_ok}/{} in, median {}, slowest {}; new client: {new_ok}/{} in, median {}, slowest {}",
            "",
            trusted.len(),
            ms(median(&mut trusted)),
            ms(trusted.iter().max().copied().unwrap_or_default()),
            newcomer.len(),
            ms(median(&mut newcomer)),
            ms(newcomer.iter().max().copied().unwrap_or_default()),
        );
    }

    fn many_addresses(bin: &Path) {
        println!(
            "\n== 3. one bad line from each of 10,000 addresses, each in a /24 of its own (-r 1)"
        );
        let server = Server::start(bin, &["-r", "1"]);
        thread::sleep(Duration::from_secs(1));
        let idle = server.rss_kib();
        let started = Instant::now();
        let mut sent = 0;
        let mut answers = std::collections::BTreeMap::new();
        for i in 0..10_000u32 {
            // Each in a /24 of its own: no prefix ban covers them, every one is a line.
            let a = format!("127.{}.{}.1", 50 + i / 256, i % 256);
            if let Ok(mut t) = connect_from(&a, server.port) {
                let _ = t.write_all(b"GET / HTTP/1.1\n");
                let answer = read_line(&mut t, Duration::from_secs(5)).unwrap_or_default();
                *answers
                    .entry(answer.get(..3).unwrap_or("---").to_owned())
                    .or_insert(0) += 1;
                sent += 1;
            }
        }
        let took = started.elapsed();
        thread::sleep(Duration::from_secs(3));
        let list = std::fs::read_to_string(server.ban_list()).unwrap_or_default();
        let rss = server.rss_kib();
        println!(
            "{sent} addresses in {:.1} s, answers {answers:?}; ban list {} lines, {} KiB; RSS {} KiB idle, {} KiB after ({:.2}x)",
            took.as_secs_f64(),
            list.lines().count(),
            list.len() / 1024,
            idle,
            rss,
            rss as f64 / idle.max(1) as f64,
        );
    }

    pub fn main() {
        // `cargo test --all-targets` runs bench targets too, without `--bench`: these five
        // minutes of attacks are for `cargo bench` (bench/attack.sh) only.
        if !std::env::args().any(|a| a == "--bench") {
            println!(
                "attack: figures come from `bash bench/attack.sh`; nothing to do under cargo test"
            );
            return;
        }
        let bin = binary();
        println!("attacks on {}", bin.display());
        // `cargo bench --bench attack -- slots guessing addresses` picks parts (all by default).
        let picked: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let run = |part: &str| picked.is_empty() || picked.iter().any(|p| p == part);
        if run("slots") {
            slots(&bin);
        }
        if run("guessing") {
            println!("\n== 2. guessing from 26 rotating addresses, 4 guesses each");
            let one: Vec<String> = (1..=26).map(|i| format!("127.0.7.{i}")).collect();
            let spread: Vec<String> = (1..=26).map(|i| format!("127.7.{i}.1")).collect();
            guessing(&bin, "one /24", &one, Duration::from_secs(60));
            guessing(&bin, "26 /24s", &spread, Duration::from_secs(60));
        }
        if run("addresses") {
            many_addresses(&bin);
        }
    }
}
