//! A private PipeWire session with null sinks, reached from cpal's ALSA host through the ALSA
//! pulse plugin (testing.md), or from Wine's WASAPI through winepulse; tones played into a sink
//! and analysed from a recording of its monitor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{DbusSession, Proc, Sandbox, SECS};

pub const ASOUNDRC: &str = r#"
pcm.micA     { type pulse device "sinkA.monitor" hint { show on description "capture of sink A" } }
pcm.speakerB { type pulse device "sinkB"         hint { show on description "playback into sink B" } }
pcm.speakerC { type pulse device "sinkC"         hint { show on description "playback into sink C (44.1 kHz)" } }
pcm.!default { type pulse }
ctl.!default { type pulse }
"#;

/// A D-Bus session bus plus PipeWire, WirePlumber and pipewire-pulse, all private to one test.
pub struct PipeWire {
    dir: PathBuf,
    pub env: Vec<(String, String)>,
    children: Vec<Child>,
    _dbus: DbusSession,
}

impl PipeWire {
    /// A session whose null sinks are pipewire-pulse's modules (they go when it goes).
    pub fn start(sb: &Sandbox) -> Self {
        let pw = Self::start_bare(sb);
        for (name, rate) in [("sinkA", 48_000), ("sinkB", 48_000), ("sinkC", 44_100)] {
            let ok = pw
                .cmd("pactl")
                .args([
                    "load-module",
                    "module-null-sink",
                    &format!("sink_name={name}"),
                    &format!("rate={rate}"),
                ])
                .stdout(Stdio::null())
                .status()
                .expect("pactl");
            assert!(ok.success(), "could not create {name}");
        }
        pw
    }

    /// A session whose null sinks are PipeWire's own nodes, as a desktop's devices are: they
    /// outlive a restart of pipewire-pulse.
    pub fn start_with_lasting_sinks(sb: &Sandbox) -> Self {
        let pw = Self::start_bare(sb);
        for name in ["sinkA", "sinkB"] {
            pw.make_sink(name);
        }
        pw
    }

    /// Makes a null sink in PipeWire (48 kHz stereo) and waits until pulse clients see it.
    pub fn make_sink(&self, name: &str) {
        self.create_sink_node(name);
        self.wait_for_sink(name);
    }

    /// Makes a null sink in PipeWire (48 kHz stereo; it outlives pw-cli and pipewire-pulse).
    fn create_sink_node(&self, name: &str) {
        let props = format!(
            "{{ factory.name=support.null-audio-sink node.name={name} media.class=Audio/Sink object.linger=true audio.position=[FL FR] audio.rate=48000 }}"
        );
        let ok = self
            .cmd("pw-cli")
            .args(["create-node", "adapter", &props])
            .stdout(Stdio::null())
            .status()
            .expect("pw-cli");
        assert!(ok.success(), "could not create {name}");
    }

    /// Waits until pipewire-pulse lists the sink.
    pub fn wait_for_sink(&self, name: &str) {
        let deadline = Instant::now() + SECS(15);
        loop {
            let out = self
                .cmd("pactl")
                .args(["list", "short", "sinks"])
                .stderr(Stdio::null())
                .output()
                .expect("pactl");
            if String::from_utf8_lossy(&out.stdout).contains(name) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes a null sink that [`PipeWire::start`] made (as unplugging a device does).
    pub fn remove_sink(&self, name: &str) {
        let out = self
            .cmd("pactl")
            .args(["list", "short", "modules"])
            .output()
            .expect("pactl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let module = text
            .lines()
            .find(|l| l.contains(&format!("sink_name={name} ")))
            .and_then(|l| l.split('\t').next())
            .unwrap_or_else(|| panic!("no module made {name}:\n{text}"));
        let ok = self
            .cmd("pactl")
            .args(["unload-module", module])
            .status()
            .expect("pactl");
        assert!(ok.success(), "could not remove {name}");
    }

    /// Makes a null sink as [`PipeWire::start`] does (48 kHz) and waits until it is listed.
    pub fn add_sink(&self, name: &str) {
        let ok = self
            .cmd("pactl")
            .args([
                "load-module",
                "module-null-sink",
                &format!("sink_name={name}"),
                "rate=48000",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("pactl");
        assert!(ok.success(), "could not create {name}");
        self.wait_for_sink(name);
    }

    /// Kills pipewire-pulse (as `systemctl --user restart pipewire-pulse` does first).
    pub fn kill_pulse(&mut self) {
        let c = &mut self.children[2];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Kills the whole session: pipewire-pulse, WirePlumber and PipeWire.
    pub fn kill_all(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the whole session again with `sinks` made in PipeWire before pipewire-pulse
    /// starts, as a desktop's configured devices come back with the session itself; waits
    /// until pipewire-pulse answers and lists them. (Made after it, a client of the pulse
    /// protocol that reopens in between is placed on whichever sink exists, and stays there.)
    pub fn start_all_with_sinks(&mut self, sinks: &[&str]) {
        for (i, prog) in ["pipewire", "wireplumber"].iter().enumerate() {
            let child = self
                .cmd(prog)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(prog);
            self.children[i] = child;
        }
        let deadline = Instant::now() + SECS(15);
        while !self
            .cmd("pw-cli")
            .args(["info", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "pipewire did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        for name in sinks {
            self.create_sink_node(name);
        }
        self.start_pulse();
        for name in sinks {
            self.wait_for_sink(name);
        }
    }

    /// Starts pipewire-pulse again and waits until it answers.
    pub fn start_pulse(&mut self) {
        let child = self
            .cmd("pipewire-pulse")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pipewire-pulse");
        self.children[2] = child;
        self.wait_for_pulse();
    }

    fn wait_for_pulse(&self) {
        let deadline = Instant::now() + SECS(15);
        while !self
            .cmd("pactl")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "pipewire-pulse did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_bare(sb: &Sandbox) -> Self {
        let dir = sb.path("pw");
        let runtime = dir.join("run");
        let config = sb.path("config");
        std::fs::create_dir_all(config.join("alsa")).expect("mkdir");
        std::fs::create_dir_all(&runtime).expect("mkdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        std::fs::write(config.join("alsa/asoundrc"), ASOUNDRC).expect("asoundrc");
        let dbus = DbusSession::start(&runtime.join("bus"));
        // WirePlumber keeps the default sink and each stream's target under XDG_STATE_HOME
        // (else ~/.local/state): one test's `pactl set-default-sink` must not steer another's.
        let env = vec![
            ("XDG_RUNTIME_DIR".to_owned(), runtime.display().to_string()),
            ("XDG_CONFIG_HOME".to_owned(), config.display().to_string()),
            (
                "XDG_STATE_HOME".to_owned(),
                sb.path("state").display().to_string(),
            ),
            ("DBUS_SESSION_BUS_ADDRESS".to_owned(), dbus.address.clone()),
            ("PIPEWIRE_LOG_LEVEL".to_owned(), "0".to_owned()),
        ];
        let mut pw = Self {
            dir,
            env,
            children: Vec::new(),
            _dbus: dbus,
        };
        for prog in ["pipewire", "wireplumber", "pipewire-pulse"] {
            let child = pw
                .cmd(prog)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(prog);
            pw.children.push(child);
            std::thread::sleep(Duration::from_millis(200));
        }
        pw.wait_for_pulse();
        pw
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.current_dir(self.dir.parent().expect("sandbox"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// An echowarp command inside the session (the sandbox's folders, the session's devices).
    pub fn echowarp(&self, sb: &Sandbox, args: &[&str]) -> Proc {
        let mut c = sb.command(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Proc::spawn(c, args)
    }

    /// Records a sink's monitor as raw s16le stereo at `rate` into a file.
    pub fn record(&self, monitor: &str, rate: u32, file: &Path) -> Child {
        let out = std::fs::File::create(file).expect("create");
        self.cmd("pacat")
            .args([
                "--record",
                "-d",
                monitor,
                "--format=s16le",
                "--channels=2",
                &format!("--rate={rate}"),
                "--latency-msec=20",
            ])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("pacat")
    }

    /// Plays `seconds` of a sine at `hz`, amplitude 0.5, into a sink (48 kHz, same on both channels).
    pub fn play_tone(&self, sink: &str, hz: f32, seconds: f32) -> Child {
        let mut p = self
            .cmd("pacat")
            .args([
                "--playback",
                "-d",
                sink,
                "--format=s16le",
                "--channels=2",
                "--rate=48000",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pacat");
        let data = sine(hz, (48_000.0 * seconds) as usize);
        let mut stdin = p.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        p
    }
}

impl PipeWire {
    /// Plays a sine at `hz`, amplitude 0.5, into a sink through PipeWire itself (pw-cat: it
    /// outlives pipewire-pulse), until the returned guard drops. A player that ends (its sink
    /// went away with the session) is started again at once, so the source is there whenever
    /// the sink is.
    pub fn play_tone_native(&self, sink: &str, hz: f32) -> Tone {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut cmd = self.cmd("pw-cat");
        cmd.args([
            "--playback",
            "--target",
            sink,
            "--format=s16",
            "--channels=2",
            "--rate=48000",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // Ten seconds of the sine, written again and again.
        let second = sine(hz, 48_000 * 10);
        let stopped = stop.clone();
        let keeper = std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            while !stopped.load(Ordering::Relaxed) {
                let Ok(mut p) = cmd.spawn() else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let mut stdin = p.stdin.take().expect("stdin");
                let data = second.clone();
                let feeder = stopped.clone();
                std::thread::spawn(move || {
                    while !feeder.load(Ordering::Relaxed) && stdin.write_all(&data).is_ok() {}
                });
                while !stopped.load(Ordering::Relaxed) && matches!(p.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = p.kill();
                let _ = p.wait();
            }
        });
        Tone {
            stop,
            keeper: Some(keeper),
        }
    }

    /// Records what a sink plays (its monitor) through PipeWire itself, as raw s16le stereo at
    /// 48 kHz.
    pub fn record_native(&self, sink: &str, file: &Path) -> Child {
        let out = std::fs::File::create(file).expect("create");
        self.cmd("pw-cat")
            .args([
                "--record",
                "--target",
                sink,
                "-P",
                "{ stream.capture.sink=true }",
                "--format=s16",
                "--channels=2",
                "--rate=48000",
                "-",
            ])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("pw-cat")
    }
}

/// `frames` of a sine at `hz`, amplitude 0.5, as raw s16le stereo at 48 kHz (the same on both
/// channels).
fn sine(hz: f32, frames: usize) -> Vec<u8> {
    (0..frames)
        .flat_map(|i| {
            let s = (((std::f32::consts::TAU * hz * i as f32 / 48_000.0).sin() * 16_384.0) as i16)
                .to_le_bytes();
            [s[0], s[1], s[0], s[1]]
        })
        .collect()
}

/// A tone kept playing into a sink until dropped.
pub struct Tone {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Tone {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
    }
}

impl Drop for PipeWire {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The left channel of a raw s16le stereo recording.
pub fn samples(file: &Path) -> Vec<i16> {
    std::fs::read(file)
        .expect("recording")
        .chunks_exact(4)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Frequency (median zero-crossing period), RMS level in dBFS, length, and the longest near-silent run (a
/// dropout: a 1 kHz sine stays within ±50 of zero for well under one sample) of the loud part.
pub fn analyse(recording: &[i16], rate: u32) -> (f64, f64, usize, usize) {
    let loud: Vec<f64> = {
        let start = recording
            .iter()
            .position(|s| s.unsigned_abs() > 2_000)
            .unwrap_or(recording.len());
        let end = recording
            .iter()
            .rposition(|s| s.unsigned_abs() > 2_000)
            .unwrap_or(0);
        if end <= start + 4_800 {
            return (0.0, f64::NEG_INFINITY, 0, 0);
        }
        // Skip the edges, where the tone fades in and out of the buffers.
        let margin = (end - start) / 10;
        recording[start + margin..end - margin]
            .iter()
            .map(|&s| f64::from(s) / 32_768.0)
            .collect()
    };
    // The median period between upward zero crossings (interpolated): a dropout spoils one or
    // two periods, not the estimate.
    let ups: Vec<f64> = loud
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + w[0] / (w[0] - w[1]))
        .collect();
    let mut periods: Vec<f64> = ups.windows(2).map(|p| p[1] - p[0]).collect();
    periods.sort_by(f64::total_cmp);
    let freq = periods
        .get(periods.len() / 2)
        .map_or(0.0, |p| f64::from(rate) / p);
    let rms = (loud.iter().map(|x| x * x).sum::<f64>() / loud.len() as f64).sqrt();
    let (mut run, mut longest) = (0usize, 0usize);
    for x in &loud {
        run = if x.abs() < 50.0 / 32_768.0 {
            run + 1
        } else {
            0
        };
        longest = longest.max(run);
    }
    (freq, 20.0 * rms.log10(), loud.len(), longest)
}

/// How far a 1 kHz tone may be heard from 1 kHz: the drift corrector may trim the playout rate
/// by up to its limit (`MAX_CORRECTION`, 0.5 %: 5 Hz) while the buffer moves to a new set point
/// (on a busy host it does: 1005.0 Hz was measured), and 1 Hz for the measurement.
pub const PITCH_TOLERANCE_HZ: f64 = 1_000.0 * echowarp::audio::adapt::MAX_CORRECTION + 1.0;

/// Two PipeWire sessions at once are too much for a 2-core machine: one at a time.
pub static ONE_SESSION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until a client run with `--stats-json` has played (the capture's silence) for
/// `seconds` with audio in its buffer: a tone sent after that is heard at the steady state's
/// pitch. In the first second or two the drift corrector may trim the rate by up to its 0.5 %
/// limit while the buffer reaches its set point (995 Hz seen here).
pub fn wait_until_played(client: &Proc, seconds: f64) {
    let deadline = Instant::now() + SECS(20);
    while !client
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            v["depth_ms"].as_f64().unwrap_or(0.0) > 0.0 && v["t"].as_f64().unwrap_or(0.0) >= seconds
        })
    {
        assert!(
            Instant::now() < deadline,
            "the client did not play for {seconds} s:\n{}\n{}",
            client.stderr(),
            client.stdout()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that a recording holds the test tone, a 1 kHz sine at amplitude 0.5 (RMS -9.03
/// dBFS): `(frequency, level dBFS, loud samples)` as [`analyse`] gives them.
pub fn assert_tone((freq, level, loud): (f64, f64, usize)) {
    assert!(loud > 48_000, "only {loud} samples of tone");
    assert!(
        (freq - 1_000.0).abs() < PITCH_TOLERANCE_HZ,
        "frequency {freq:.1} Hz"
    );
    assert!((level - -9.03).abs() < 1.0, "level {level:.2} dBFS");
}

/// How EchoWarp reaches the session's sinks: through ALSA's pulse plug-in (the PCMs of
/// [`ASOUNDRC`]), PipeWire's own API, or the PulseAudio protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Alsa,
    PipeWire,
    Pulse,
}

impl Route {
    /// `--audio-host`'s value.
    pub fn host(self) -> &'static str {
        match self {
            Route::Alsa => "alsa",
            Route::PipeWire => "pipewire",
            Route::Pulse => "pulse",
        }
    }

    /// A server's flags to capture what sink A plays.
    pub fn capture_sink_a(self) -> Vec<&'static str> {
        match self {
            Route::Alsa => vec!["--audio-host", "alsa", "-d", "micA"],
            Route::PipeWire => vec!["--audio-host", "pipewire", "-o", "-d", "sinkA"],
            Route::Pulse => vec!["--audio-host", "pulse", "-d", "sinkA.monitor"],
        }
    }

    /// A client's flags to play into `sink` (sinkB, or sinkC at 44.1 kHz).
    pub fn play_into(self, sink: &str) -> Vec<String> {
        let device = match (self, sink) {
            (Route::Alsa, "sinkB") => "speakerB".to_owned(),
            (Route::Alsa, "sinkC") => "speakerC".to_owned(),
            (Route::Alsa, other) => panic!("no ALSA PCM for {other}"),
            (_, other) => other.to_owned(),
        };
        vec![
            "--audio-host".into(),
            self.host().into(),
            "-d".into(),
            device,
        ]
    }
}
