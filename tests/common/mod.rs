//! Test harness: runs the real `echowarp` binary with its own config and data folders, watches
//! its stderr for events, and reads and writes WAV files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod login;
pub mod netem;
pub mod pipewire;
pub mod wine;

pub const BIN: &str = env!("CARGO_BIN_EXE_echowarp");

/// A sandbox: XDG folders and HOME in a temporary directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The binary it runs.
    pub bin: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            bin: PathBuf::from(BIN),
        }
    }

    /// A sandbox that runs `bin`.
    pub fn of(bin: &Path) -> Self {
        assert!(bin.is_file(), "no binary at {}", bin.display());
        Self {
            bin: bin.to_owned(),
            ..Self::new()
        }
    }

    /// A sandbox that runs the release build named by `ECHOWARP_RELEASE_BIN` (the test command
    /// builds it first), so that attacks meet the binary users run; without it, the test build.
    pub fn release() -> Self {
        let mut sb = Self::new();
        if let Some(bin) = std::env::var_os("ECHOWARP_RELEASE_BIN") {
            sb.bin = PathBuf::from(bin);
            assert!(
                sb.bin.is_file(),
                "ECHOWARP_RELEASE_BIN: {}",
                sb.bin.display()
            );
        }
        sb
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ban_list(&self) -> PathBuf {
        self.path("data/echowarp/echowarp_ban_list.txt")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// The binary run through `wrapper` (e.g. `ip netns exec NAME`), else as [`Sandbox::command`].
    pub fn command_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.args(args)
            .current_dir(self.dir.path())
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("HOME", self.dir.path())
            .env_remove("ECHOWARP_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str], timeout: Duration) -> (i32, String, String) {
        let mut p = self.spawn(args);
        let status = p.wait_timeout(timeout);
        (status.code().unwrap_or(-1), p.stdout(), p.stderr())
    }

    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args), args)
    }
}

/// One client connection attempt with `password` (`-r 1`, playing into `null`); returns the
/// exit code and stderr.
pub fn one_attempt(sb: &Sandbox, port: &str, password: &str) -> (i32, String) {
    let (code, _, err) = sb.run(&attempt_args(port, password), SECS(20));
    (code, err)
}

/// The arguments of [`one_attempt`]: a client on 127.0.0.1 that tries once.
pub fn attempt_args<'a>(port: &'a str, password: &'a str) -> [&'a str; 11] {
    [
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        port,
        "-p",
        password,
        "-d",
        "null",
        "-r",
        "1",
    ]
}

/// Against a server run with `-p right -r 2`: two wrong passwords get 401 (exit 3), and then
/// even the right one gets 403 (exit 4). `attempt(password)` gives an exit code and stderr.
pub fn assert_two_failures_ban(mut attempt: impl FnMut(&str) -> (i32, String)) {
    for _ in 0..2 {
        let (code, err) = attempt("wrong");
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains("error: 401 Unauthorized (Invalid password)"),
            "{err}"
        );
    }
    let (code, err) = attempt("right");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("error: 403 Forbidden (Client is banned)"),
        "{err}"
    );
}

/// A running echowarp whose output is collected in the background.
pub struct Proc {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    label: String,
}

fn collect(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut s = into.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl Proc {
    pub fn spawn(mut cmd: Command, args: &[&str]) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn echowarp");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), out.clone());
        collect(child.stderr.take().expect("stderr"), err.clone());
        Self {
            child,
            out,
            err,
            label: args.join(" "),
        }
    }

    pub fn stderr(&self) -> String {
        self.err.lock().expect("lock").clone()
    }

    pub fn stdout(&self) -> String {
        self.out.lock().expect("lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until stderr contains `needle` `times` times; panics with the output after `timeout`.
    pub fn wait_for_n(&mut self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().matches(needle).count() >= times {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines.
                thread::sleep(Duration::from_millis(50));
                if self.stderr().matches(needle).count() >= times {
                    return;
                }
                panic!(
                    "`{}` exited ({status}) before printing {needle:?}:\n{}",
                    self.label,
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "`{}` did not print {needle:?} within {timeout:?}:\n{}",
                    self.label,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_n(needle, 1, timeout)
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(50));
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "`{}` still running after {timeout:?}:\n{}",
                    self.label,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Stops the process with SIGTERM, as a user's Ctrl-C or a service manager would, and
    /// asserts that it exits cleanly (code 0) within 10 s.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_timeout(Duration::from_secs(10));
        assert!(
            status.success(),
            "`{}` stopped with {status}:\n{}",
            self.label,
            self.stderr()
        );
    }

    /// Stops the process with SIGINT (Ctrl-C; under Wine, the console's CTRL_C_EVENT) and
    /// asserts that it exits cleanly (code 0) within 15 s.
    pub fn interrupt(&mut self) {
        self.signal("INT");
        let status = self.wait_timeout(Duration::from_secs(15));
        assert!(
            status.success(),
            "`{}` stopped with {status}:\n{}",
            self.label,
            self.stderr()
        );
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind tcp")
            .local_addr()
            .expect("addr")
            .port();
        // The server binds [::] dual-stack for both protocols: check exactly that.
        if TcpListener::bind(("::", port)).is_ok() && UdpSocket::bind(("::", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// Deterministic, noise-like 16-bit audio: every sample differs, so any slip or loss shows.
pub fn write_test_wav(path: &Path, seconds: f32, rate: u32, channels: u16) -> Vec<i16> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    let n = (seconds * rate as f32) as usize * usize::from(channels);
    let mut x: u32 = 0x1234_5678;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let s = (x >> 16) as i16;
        let s = if s == 0 { 1 } else { s };
        samples.push(s);
        w.write_sample(s).expect("write");
    }
    w.finalize().expect("finalize");
    samples
}

pub fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s = r
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .expect("samples");
    (spec, s)
}

/// Asserts `got` is `want` after some leading silence, sample for sample.
pub fn assert_sample_exact(want: &[i16], got: &[i16]) {
    let lead = got.iter().position(|&s| s != 0).unwrap_or(got.len());
    let body = &got[lead..];
    assert_eq!(
        body.len(),
        want.len(),
        "recording has {} samples after {} of silence; source has {}",
        body.len(),
        lead,
        want.len()
    );
    if let Some(i) = body.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "first difference at sample {i}: got {}, want {}",
            body[i], want[i]
        );
    }
}

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Streams `seconds` of a 48 kHz stereo WAV from a server run in `server` (with `server_args`
/// added, password "s3cret") to a client run in `client`, which records it; both must exit 0.
/// Returns what was sent and what was recorded, with the recording's format.
pub fn wav_between(
    server: &Sandbox,
    client: &Sandbox,
    server_args: &[&str],
    seconds: f32,
) -> (Vec<i16>, Vec<i16>, hound::WavSpec) {
    let want = write_test_wav(&server.path("in.wav"), seconds, 48_000, 2);
    let port = free_port().to_string();
    let mut args = vec!["-d", "wav:in.wav", "-u", &port, "-p", "s3cret"];
    args.extend_from_slice(server_args);
    let mut s = server.spawn(&args);
    s.wait_for("listening on", SECS(10));
    let mut c = client.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &port,
        "-p",
        "s3cret",
        "-d",
        "wav:out.wav",
    ]);
    let cs = c.wait_timeout(SECS(20));
    let ss = s.wait_timeout(SECS(10));
    assert!(cs.success(), "client {server_args:?}: {cs}\n{}", c.stderr());
    assert!(ss.success(), "server {server_args:?}: {ss}\n{}", s.stderr());
    let (spec, got) = read_wav(&client.path("out.wav"));
    (want, got, spec)
}

/// A private D-Bus session bus for one test (PipeWire, GTK and notifications want one).
pub struct DbusSession {
    pub address: String,
    child: Child,
}

impl DbusSession {
    pub fn start(socket: &Path) -> Self {
        use std::io::Read;
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed by the test command");
        let mut address = String::new();
        let mut out = child.stdout.take().expect("stdout");
        let mut byte = [0u8; 1];
        while !address.ends_with('\n') {
            assert_eq!(
                out.read(&mut byte).expect("dbus address"),
                1,
                "dbus-daemon exited"
            );
            address.push(byte[0] as char);
        }
        Self {
            address: address.trim().to_owned(),
            child,
        }
    }
}

impl Drop for DbusSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a chord (A3, E4, C#5 and a 3 kHz overtone, slowly swelling) as a 16-bit WAV: music-
/// like material a lossy codec can be judged on (white noise cannot). Returns the samples.
pub fn write_chord_wav(path: &Path, seconds: f32, rate: u32, channels: u16) -> Vec<i16> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    let frames = (seconds * rate as f32) as usize;
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        let t = i as f64 / f64::from(rate);
        let swell = 0.75 + 0.25 * (std::f64::consts::TAU * 0.5 * t).sin();
        let v = [220.0, 329.6, 554.4, 3_000.0]
            .iter()
            .zip([0.3, 0.25, 0.2, 0.05])
            .map(|(f, a)| a * (std::f64::consts::TAU * f * t).sin())
            .sum::<f64>()
            * swell
            * 26_000.0;
        for _ in 0..channels {
            samples.push(v as i16);
            w.write_sample(v as i16).expect("write");
        }
    }
    w.finalize().expect("finalize");
    samples
}

/// The best alignment of `got` against `want` (interleaved, `channels`), searching shifts of
/// 0..`max_shift` frames: (SNR in dB, shift in frames).
pub fn aligned_snr(want: &[i16], got: &[i16], channels: usize, max_shift: usize) -> (f64, usize) {
    let snr_at = |shift: usize| {
        let (mut sig, mut err) = (0.0f64, 0.0f64);
        for (i, &g) in got.iter().enumerate() {
            if let Some(&w) = want.get(i + shift * channels) {
                sig += f64::from(w).powi(2);
                err += (f64::from(w) - f64::from(g)).powi(2);
            }
        }
        10.0 * (sig / err.max(1.0)).log10()
    };
    (0..max_shift)
        .map(|s| (snr_at(s), s))
        .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// CPU time (user and system) a process has used so far, in seconds: 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
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
    // In clock ticks of the kernel's USER_HZ, 100 on every Linux this runs on.
    (get(11) + get(12)) as f64 / 100.0
}

/// The `device` field of each `--stats-json` line a process printed, in order.
pub fn device_states(p: &Proc) -> Vec<String> {
    p.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["device"].as_str().map(str::to_owned))
        .collect()
}

/// A profile the program wrote back: the user's first line (`# mine`) is kept, and each of
/// `lines` is in it.
pub fn assert_profile_kept_with(saved: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            saved.starts_with("# mine\n") && saved.contains(line),
            "{line}:\n{saved}"
        );
    }
}
