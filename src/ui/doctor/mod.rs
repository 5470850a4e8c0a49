//! `echowarp doctor`: what streaming needs on this machine, checked one thing at a time with
//! the settings a run would use (the profile and the flags beside it), each said on one line
//! with the command that fixes it when it is wrong. The exit status is 1 when something blocks
//! streaming (no sound device, the port taken, the server out of reach, a broken profile); what
//! only costs comfort (no notification service, no tray host) is warned of and exits 0.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::audio::{cpal_backend, AudioHost, DeviceKind, DeviceSpec, Frame, StreamFormat};
use crate::engine::ConfigError;
use crate::store::profile::{Profile, Role};

mod system;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing is wrong.
    Note,
    /// Something works less well than it could (notices, the tray); streaming works.
    Warn,
    /// Streaming cannot work until this is fixed.
    Blocks,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Note => "note",
            Verdict::Warn => "warn",
            Verdict::Blocks => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked (`port`, `notifications` ...).
    pub check: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub said: String,
    /// The command (or the step) that fixes it.
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &'static str, verdict: Verdict, said: impl Into<String>) -> Self {
        Self {
            check,
            verdict,
            said: said.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Runs every check with the settings a run would use. A profile that cannot be read is a
/// finding of its own; the rest is then checked with the defaults.
pub fn examine(profile: Result<Profile, ConfigError>, bind: Option<IpAddr>) -> Vec<Finding> {
    let mut found = Vec::new();
    let profile = match profile {
        Ok(p) => {
            found.push(Finding::new(
                "profile",
                Verdict::Ok,
                format!(
                    "{}, port {}, audio host {}",
                    match p.role {
                        Role::Server => "server",
                        Role::Client => "client",
                    },
                    p.port,
                    p.audio_host.name()
                ),
            ));
            p
        }
        Err(e) => {
            found.push(
                Finding::new("profile", Verdict::Blocks, super::display_chain(&e)).fix(
                    "fix the line named (echowarp --show-config prints a whole, valid profile)",
                ),
            );
            Profile::default()
        }
    };
    if let Some(f) = system::sound_server() {
        found.push(f);
    }
    found.extend(audio(&profile));
    found.push(system::port(&profile, bind));
    found.push(system::firewall(&profile));
    found.push(system::notifications());
    found.push(system::tray_host());
    found
}

/// The audio host, its devices, the device this role would open, and a virtual cable.
fn audio(profile: &Profile) -> Vec<Finding> {
    let choice = profile.audio_host;
    let host = match cpal_backend::host_name(choice) {
        Ok(name) => name,
        Err(e) => {
            return vec![Finding::new("audio host", Verdict::Blocks, e.to_string())
                .fix(start_sound_server(choice))]
        }
    };
    let auto = if choice == AudioHost::Auto {
        " (auto)"
    } else {
        ""
    };
    let devices = match cpal_backend::list_devices(choice) {
        Ok(d) => d,
        Err(e) => {
            return vec![
                Finding::new("audio host", Verdict::Blocks, format!("{host}{auto}: {e}"))
                    .fix(start_sound_server(choice)),
            ]
        }
    };
    let inputs = devices.iter().filter(|d| d.input).count();
    let outputs = devices.iter().filter(|d| d.output).count();
    let mut found = vec![Finding::new(
        "audio host",
        Verdict::Ok,
        format!("{host}{auto}: {inputs} inputs, {outputs} outputs"),
    )];
    found.push(device(profile, inputs, outputs));
    found.push(cable(&devices));
    #[cfg(target_os = "linux")]
    found.push(virtual_mic());
    found
}

/// What a sound server's absence asks for.
fn start_sound_server(choice: AudioHost) -> String {
    if cfg!(target_os = "linux") {
        match choice {
            AudioHost::Jack => "start a JACK server (jackd, or qjackctl), or use --audio-host auto".into(),
            _ => "start the sound server: systemctl --user start pipewire pipewire-pulse wireplumber (or pulseaudio --start)".into(),
        }
    } else {
        "check that the system's audio service runs and that a sound device is enabled".into()
    }
}

/// The device this role opens, found as a run would find it.
fn device(profile: &Profile, inputs: usize, outputs: usize) -> Finding {
    let spec = match DeviceSpec::parse(&profile.device) {
        Ok(s) => s,
        Err(e) => return Finding::new("device", Verdict::Blocks, e.to_string()),
    };
    let server = profile.role == Role::Server;
    let (kind, loopback) = match (server, profile.device_kind) {
        (true, DeviceKind::Output) => (DeviceKind::Output, true),
        (true, DeviceKind::Input) => (DeviceKind::Input, false),
        (false, _) => (DeviceKind::Output, false),
    };
    let verb = if server && loopback {
        "captures what this plays"
    } else if server {
        "captures from"
    } else {
        "plays on"
    };
    match spec {
        DeviceSpec::Wav(_) | DeviceSpec::Tone(_) | DeviceSpec::Null => {
            return Finding::new(
                "device",
                Verdict::Ok,
                format!("{} (no sound device needed)", profile.device),
            )
        }
        DeviceSpec::Default | DeviceSpec::Index(_) | DeviceSpec::Name(_) => {}
    }
    let none = match kind {
        DeviceKind::Input if !loopback => inputs == 0,
        _ => outputs == 0,
    };
    if none && matches!(spec, DeviceSpec::Default) {
        return Finding::new(
            "device",
            Verdict::Blocks,
            format!("no {} device at all", kind.name()),
        )
        .fix(start_sound_server(profile.audio_host));
    }
    let named = match cpal_backend::resolve(profile.audio_host, &spec, kind, loopback) {
        Ok(d) if d.name == d.id => d.id,
        Ok(d) => format!("{} ({})", d.id, d.name),
        Err(e) => return Finding::new("device", Verdict::Blocks, e.to_string())
            .fix("echowarp --list-devices shows what there is; pick one with -d (an index, or a part of its name)"),
    };
    // Found is not enough (ALSA's default PCM is listed with no sound server behind it): the
    // device is opened and run for a moment, as a run would.
    let tried = if server {
        try_capture(profile.audio_host, &spec, kind)
    } else {
        try_playback(profile.audio_host, &spec)
    };
    match tried {
        Ok(how) => Finding::new("device", Verdict::Ok, format!("{verb} {named}: {how}")),
        Err(why) => Finding::new("device", Verdict::Blocks, format!("{verb} {named}: {why}"))
            .fix(start_sound_server(profile.audio_host)),
    }
}

/// How long a device is given to show that it runs.
const TRY_FOR: Duration = Duration::from_millis(1_500);

/// Opens the capture and waits for its first audio.
fn try_capture(host: AudioHost, spec: &DeviceSpec, kind: DeviceKind) -> Result<String, String> {
    let source = cpal_backend::open_source(host, spec, kind, None, TRY_PERIOD)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let format = source.format();
    let mut capture = source
        .start()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let mut frame = vec![0i16; usize::from(format.channels) * (format.sample_rate as usize / 100)];
    let until = Instant::now() + TRY_FOR;
    while Instant::now() < until {
        if let Some(fault) = capture.fault() {
            return Err(format!("it failed: {fault}"));
        }
        match capture.next_frame(Instant::now(), &mut frame) {
            Frame::Full | Frame::Last(_) => {
                return Ok(format!(
                    "delivers audio ({} Hz, {} ch)",
                    format.sample_rate, format.channels
                ))
            }
            Frame::Wait(d) => std::thread::sleep(d.min(Duration::from_millis(20))),
            Frame::Ended => break,
        }
    }
    Err(format!(
        "it opened but delivered no audio in {:.1} s",
        TRY_FOR.as_secs_f64()
    ))
}

/// Opens the playback and lets it run for a moment.
fn try_playback(host: AudioHost, spec: &DeviceSpec) -> Result<String, String> {
    let want = StreamFormat {
        sample_rate: 48_000,
        channels: 2,
    };
    let mut sink = cpal_backend::open_sink(host, spec, want, TRY_PERIOD)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let format = sink.format();
    std::thread::sleep(TRY_FOR / 3);
    let fault = sink.fault();
    let _ = sink.finish();
    match fault {
        Some(f) => Err(format!("it failed: {f}")),
        None => Ok(format!(
            "opens and runs ({} Hz, {} ch)",
            format.sample_rate, format.channels
        )),
    }
}

/// The device period asked for while trying a device.
const TRY_PERIOD: Duration = Duration::from_millis(10);

/// A virtual cable a game can record from (the game host's side of a microphone).
fn cable(devices: &[cpal_backend::DeviceInfo]) -> Finding {
    let found: Vec<String> = devices
        .iter()
        .filter_map(|d| {
            crate::audio::cable::playback_end(&d.name, d.output)
                .map(|c| format!("{} ({})", d.name, c.product))
        })
        .collect();
    if !found.is_empty() {
        return Finding::new("virtual cable", Verdict::Ok, found.join(", "));
    }
    let hint = if cfg!(windows) {
        "for games to record what a client plays, install VB-Audio Virtual Cable (or use Steam's streaming microphone), then play into \"CABLE Input\": -c -d \"CABLE Input\""
    } else if cfg!(target_os = "macos") {
        "for other programs to record what a client plays, install BlackHole and play into it"
    } else {
        "for other programs to record what a client plays, make a null sink and play into it: pactl load-module module-null-sink sink_name=echowarp_cable (they record from echowarp_cable's monitor)"
    };
    Finding::new("virtual cable", Verdict::Note, "none found").fix(hint)
}

/// Whether `--virtual-mic` can make "EchoWarp Microphone" here.
#[cfg(target_os = "linux")]
fn virtual_mic() -> Finding {
    match crate::audio::virtual_mic::can_make() {
        Ok(()) => Finding::new(
            "virtual microphone",
            Verdict::Ok,
            "--virtual-mic can make \"EchoWarp Microphone\" (the sound server's PulseAudio interface answers)",
        ),
        Err(e) => {
            let fix = if e.contains("cannot run pactl") {
                "sudo apt-get install pulseaudio-utils"
            } else {
                "start the PulseAudio interface: systemctl --user start pipewire-pulse (or pulseaudio --start)"
            };
            Finding::new("virtual microphone", Verdict::Note, format!("--virtual-mic cannot make one: {e}")).fix(fix)
        }
    }
}

/// Prints the findings; true when something blocks streaming.
///
/// # Errors
/// Writing to `out` failed.
pub fn report(findings: &[Finding], out: &mut impl Write) -> io::Result<bool> {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    for f in findings {
        writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            f.verdict.label(),
            f.check,
            f.said
        )?;
        if let Some(fix) = &f.fix {
            writeln!(out, "{:<4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    let blocking = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Blocks)
        .count();
    match blocking {
        0 => writeln!(out, "\nnothing blocks streaming")?,
        1 => writeln!(out, "\n1 problem blocks streaming")?,
        n => writeln!(out, "\n{n} problems block streaming")?,
    }
    Ok(blocking > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_each_check_its_fix_and_whether_anything_blocks() {
        let findings = [
            Finding::new("port", Verdict::Blocks, "4415 is taken").fix("use another: -u PORT"),
            Finding::new("notifications", Verdict::Warn, "no service"),
        ];
        let mut out = Vec::new();
        assert!(report(&findings, &mut out).expect("write"));
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            format!(
                "FAIL  port           4415 is taken\n{}fix: use another: -u PORT\n\
                 warn  notifications  no service\n\n1 problem blocks streaming\n",
                " ".repeat(21)
            )
        );
        let mut out = Vec::new();
        assert!(!report(&findings[1..], &mut out).expect("write"));
        assert!(String::from_utf8(out)
            .expect("utf-8")
            .ends_with("nothing blocks streaming\n"));
    }
}
