//! Finding devices: enumeration, selection by index, id or name, the loopback of an output,
//! and the stream configuration nearest to what is wanted.

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{SampleFormat, StreamConfig};

use super::host::host;
use crate::audio::{AudioError, AudioHost, DeviceKind, DeviceSpec, StreamFormat};

/// What `--list-devices` prints about a device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Position in the host's device list: what `-d N` selects.
    pub index: usize,
    /// The host's id, e.g. `alsa:micA`.
    pub id: String,
    /// A readable name.
    pub name: String,
    /// Can capture.
    pub input: bool,
    /// Can play.
    pub output: bool,
    /// The host's default input.
    pub default_input: bool,
    /// The host's default output.
    pub default_output: bool,
    /// Most channels of any supported configuration.
    pub max_channels: u16,
    /// Lowest and highest supported rates.
    pub rates: (u32, u32),
}

pub(super) struct Found {
    pub(super) info: DeviceInfo,
    pub(super) device: cpal::Device,
}

pub(super) fn backend(device: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Backend {
        device: device.to_owned(),
        message: e.to_string(),
    }
}

/// A device id without its host: `sinkA` for `pipewire:sinkA`.
fn bare(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, name)| name)
}

/// Enumerates devices, skipping any the host fails to describe (ALSA plugin PCMs often do).
fn enumerate(host: &cpal::Host) -> Result<Vec<Found>, AudioError> {
    let default_in = host
        .default_input_device()
        .and_then(|d| d.id().ok())
        .map(|i| i.to_string());
    let default_out = host
        .default_output_device()
        .and_then(|d| d.id().ok())
        .map(|i| i.to_string());
    let devices = host.devices().map_err(|e| backend("host", e))?;
    let mut found = Vec::new();
    for (index, device) in devices.enumerate() {
        let Ok(id) = device.id().map(|i| i.to_string()) else {
            continue;
        };
        // PipeWire nodes made without a description say "unknown": their name says more.
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .ok()
            .filter(|n| !n.is_empty() && n != "unknown")
            .unwrap_or_else(|| bare(&id).to_owned());
        let mut max_channels = 0;
        let mut rates = (u32::MAX, 0);
        let mut input = false;
        let mut output = false;
        if let Ok(cfgs) = device.supported_input_configs() {
            for c in cfgs {
                input = true;
                max_channels = max_channels.max(c.channels());
                rates = (
                    rates.0.min(c.min_sample_rate()),
                    rates.1.max(c.max_sample_rate()),
                );
            }
        }
        if let Ok(cfgs) = device.supported_output_configs() {
            for c in cfgs {
                output = true;
                max_channels = max_channels.max(c.channels());
                rates = (
                    rates.0.min(c.min_sample_rate()),
                    rates.1.max(c.max_sample_rate()),
                );
            }
        }
        if !input && !output {
            continue;
        }
        let info = DeviceInfo {
            index,
            default_input: default_in.as_deref() == Some(id.as_str()),
            default_output: default_out.as_deref() == Some(id.as_str()),
            id,
            name,
            input,
            output,
            max_channels,
            rates: if rates.1 == 0 { (0, 0) } else { rates },
        };
        found.push(Found { info, device });
    }
    Ok(found)
}

/// Lists the devices `choice` offers.
///
/// # Errors
/// [`AudioError::Host`] when that host is not running; [`AudioError::Backend`] when it cannot
/// enumerate at all.
pub fn list_devices(choice: AudioHost) -> Result<Vec<DeviceInfo>, AudioError> {
    let found = enumerate(&host(choice)?)?;
    // cpal's JACK host comes up without a server, and then has no ports to offer.
    if found.is_empty() && choice == AudioHost::Jack {
        return Err(AudioError::Host(
            choice.name(),
            "no JACK server is running".into(),
        ));
    }
    Ok(found.into_iter().map(|f| f.info).collect())
}

/// The host `choice` stands for here (`auto` settled), by name: `PipeWire`, `ALSA`, `WASAPI` ...
///
/// # Errors
/// [`AudioError::Host`] when that host is not running or not built in.
pub fn host_name(choice: AudioHost) -> Result<&'static str, AudioError> {
    Ok(host(choice)?.id().name())
}

/// The device a stream of `kind` for `spec` would open (`loopback`: a server's `-o`, what an
/// output plays), without opening it.
///
/// # Errors
/// [`AudioError`] as opening it would fail: no such device, an ambiguous name, no host.
pub fn resolve(
    choice: AudioHost,
    spec: &DeviceSpec,
    kind: DeviceKind,
    loopback: bool,
) -> Result<DeviceInfo, AudioError> {
    let found = if loopback {
        find_loopback(choice, spec)?
    } else {
        find_device(choice, spec, kind)?
    };
    Ok(found.info)
}

/// Picks one device by spec among `candidates`: index, exact id or name, else a unique part.
fn pick(
    mut candidates: Vec<Found>,
    spec: &DeviceSpec,
    kind: &'static str,
) -> Result<Found, AudioError> {
    let spec_text = match spec {
        DeviceSpec::Index(i) => i.to_string(),
        DeviceSpec::Name(n) => n.clone(),
        _ => "default".to_owned(),
    };
    let none = || AudioError::NoDevice {
        kind,
        spec: spec_text.clone(),
    };
    match spec {
        DeviceSpec::Index(i) => candidates
            .into_iter()
            .find(|f| f.info.index == *i)
            .ok_or_else(none),
        DeviceSpec::Name(n) => {
            let lower = n.to_lowercase();
            // The id with or without its host (`pipewire:sinkA`, `sinkA`), or the name.
            let exact =
                |f: &Found| f.info.id == *n || bare(&f.info.id) == n.as_str() || f.info.name == *n;
            if let Some(pos) = candidates.iter().position(exact) {
                return Ok(candidates.swap_remove(pos));
            }
            let matching: Vec<usize> = candidates
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    f.info.id.to_lowercase().contains(&lower)
                        || f.info.name.to_lowercase().contains(&lower)
                })
                .map(|(i, _)| i)
                .collect();
            match matching.as_slice() {
                [] => Err(none()),
                [one] => Ok(candidates.swap_remove(*one)),
                many => Err(AudioError::Ambiguous {
                    kind,
                    spec: n.clone(),
                    candidates: many
                        .iter()
                        .map(|&i| candidates[i].info.id.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
        _ => Err(none()),
    }
}

pub(super) fn find_device(
    choice: AudioHost,
    spec: &DeviceSpec,
    kind: DeviceKind,
) -> Result<Found, AudioError> {
    let host = host(choice)?;
    let all = enumerate(&host)?;
    let is_kind = |f: &Found| match kind {
        DeviceKind::Input => f.info.input,
        DeviceKind::Output => f.info.output,
    };
    if matches!(spec, DeviceSpec::Default) {
        let default = match kind {
            DeviceKind::Input => host.default_input_device(),
            DeviceKind::Output => host.default_output_device(),
        };
        let device = default.ok_or(AudioError::NoDevice {
            kind: kind.name(),
            spec: "default".into(),
        })?;
        let id = device
            .id()
            .map(|i| i.to_string())
            .unwrap_or_else(|_| "default".into());
        if let Some(f) = all.into_iter().find(|f| f.info.id == id) {
            return Ok(f);
        }
        let info = DeviceInfo {
            index: usize::MAX,
            name: id.clone(),
            id,
            input: kind == DeviceKind::Input,
            output: kind == DeviceKind::Output,
            default_input: kind == DeviceKind::Input,
            default_output: kind == DeviceKind::Output,
            max_channels: 0,
            rates: (0, 0),
        };
        return Ok(Found { info, device });
    }
    pick(all.into_iter().filter(is_kind).collect(), spec, kind.name())
}

/// For `-o` on a server: the input that carries what an output device plays.
///
/// - Windows: WASAPI captures an output device directly in loopback mode.
/// - An ALSA input whose id or name mentions "monitor" and the wanted device (a monitor PCM the
///   user defined) is used as it is.
/// - PulseAudio and PipeWire: the ALSA `pulse` PCM records from whatever libpulse's
///   `PULSE_SOURCE` names, so `-o -d SINK` records `SINK.monitor` and `-o` alone the default
///   sink's monitor (`@DEFAULT_MONITOR@`). `-d` then names a sink as `pactl list sinks` shows it.
pub(super) fn find_loopback(choice: AudioHost, spec: &DeviceSpec) -> Result<Found, AudioError> {
    if cfg!(windows) {
        return find_device(choice, spec, DeviceKind::Output);
    }
    let host = host(choice)?;
    #[cfg(target_os = "linux")]
    match host.id() {
        // A PipeWire sink opened for capture records what it plays (cpal asks for its monitor).
        cpal::HostId::PipeWire => return find_device(choice, spec, DeviceKind::Output),
        cpal::HostId::PulseAudio => return pulse_monitor(&host, choice, spec),
        _ => {}
    }
    let all = enumerate(&host)?;
    let wanted = match spec {
        DeviceSpec::Index(_) => Some(find_device(choice, spec, DeviceKind::Output)?.info.name),
        DeviceSpec::Name(n) => Some(n.clone()),
        _ => None,
    };
    let label = wanted.clone().unwrap_or_else(|| "default".to_owned());
    let mentions = |f: &Found, what: &str| {
        f.info.id.to_lowercase().contains(what) || f.info.name.to_lowercase().contains(what)
    };
    let mut monitors = all
        .iter()
        .enumerate()
        .filter(|(_, f)| f.info.input && mentions(f, "monitor"));
    let alsa_monitor = match &wanted {
        Some(name) => monitors
            .find(|(_, f)| mentions(f, &name.to_lowercase()))
            .map(|(i, _)| i),
        None => monitors
            .find(|(_, f)| mentions(f, "default"))
            .map(|(i, _)| i),
    };
    let pulse = all
        .iter()
        .position(|f| f.info.input && f.info.id.rsplit(':').next() == Some("pulse"));
    let mut all = all;
    if let Some(i) = alsa_monitor {
        return Ok(all.swap_remove(i));
    }
    let Some(i) = pulse else {
        return Err(AudioError::NoLoopback(
            label,
            "no monitor source is visible to ALSA and there is no PulseAudio/PipeWire `pulse` device; \
             define an ALSA PCM for the monitor and pick it with -d"
                .into(),
        ));
    };
    let source = match &wanted {
        Some(sink) => {
            check_sink_exists(sink)?;
            format!("{sink}.monitor")
        }
        None => "@DEFAULT_MONITOR@".to_owned(),
    };
    // libpulse reads PULSE_SOURCE when the pulse PCM connects, on the device thread started
    // right after this. It is set once, before the server starts any thread of its own that could
    // read the environment concurrently.
    std::env::set_var("PULSE_SOURCE", &source);
    let mut found = all.swap_remove(i);
    found.info.name = format!("{source} through {}", found.info.id);
    Ok(found)
}

/// The PulseAudio protocol: every sink has a source of its own, `SINK.monitor`, which records
/// what the sink plays.
#[cfg(target_os = "linux")]
fn pulse_monitor(
    host: &cpal::Host,
    choice: AudioHost,
    spec: &DeviceSpec,
) -> Result<Found, AudioError> {
    let sink = find_device(choice, spec, DeviceKind::Output)?;
    let monitor = format!("{}.monitor", bare(&sink.info.id));
    enumerate(host)?
        .into_iter()
        .find(|f| f.info.input && bare(&f.info.id) == monitor)
        .ok_or_else(|| {
            AudioError::NoLoopback(
                sink.info.name.clone(),
                format!("the sound server offers no source {monitor:?}"),
            )
        })
}

/// PipeWire accepts a recording stream for a source that does not exist and then delivers
/// nothing, so ask the sound server for its sinks first (with `pactl`, where installed).
fn check_sink_exists(sink: &str) -> Result<(), AudioError> {
    let Ok(out) = std::process::Command::new("pactl")
        .args(["list", "short", "sinks"])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Ok(()); // no pactl: the capture watchdog still catches a silent device
    };
    if !out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let sinks: Vec<&str> = text.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    if sinks.contains(&sink) {
        return Ok(());
    }
    Err(AudioError::NoLoopback(
        format!("{sink}.monitor"),
        format!(
            "the sound server has no sink named {sink:?}; its sinks are: {}",
            sinks.join(", ")
        ),
    ))
}

/// Chooses a stream configuration: `want` if supported, else the same rate, else the default.
pub(super) fn choose_config(
    device: &cpal::Device,
    input: bool,
    want: Option<StreamFormat>,
    name: &str,
    period: std::time::Duration,
) -> Result<(StreamConfig, SampleFormat), AudioError> {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if input {
        device
            .supported_input_configs()
            .map_err(|e| backend(name, e))?
            .collect()
    } else {
        device
            .supported_output_configs()
            .map_err(|e| backend(name, e))?
            .collect()
    };
    let usable =
        |f: SampleFormat| matches!(f, SampleFormat::F32 | SampleFormat::I16 | SampleFormat::I32);
    if let Some(w) = want {
        let mut best: Option<cpal::SupportedStreamConfig> = None;
        for r in &ranges {
            if !usable(r.sample_format()) || !r.contains_rate(w.sample_rate) {
                continue;
            }
            let exact_ch = r.channels() == w.channels;
            let better = match &best {
                None => true,
                Some(b) => exact_ch && b.channels() != w.channels,
            };
            if better {
                best = Some((*r).with_sample_rate(w.sample_rate));
            }
        }
        if let Some(b) = best {
            return Ok((with_small_buffer(device, &b, period), b.sample_format()));
        }
    }
    let d = if input {
        device.default_input_config()
    } else {
        device.default_output_config()
    }
    .map_err(|e| backend(name, e))?;
    if !usable(d.sample_format()) {
        return Err(AudioError::Format(format!(
            "{name}: sample format {:?}",
            d.sample_format()
        )));
    }
    Ok((with_small_buffer(device, &d, period), d.sample_format()))
}

/// The device's configuration with a buffer of one `period` (see [`crate::audio::device_period`]),
/// where it lets us choose.
fn with_small_buffer(
    device: &cpal::Device,
    c: &cpal::SupportedStreamConfig,
    period: std::time::Duration,
) -> StreamConfig {
    let mut config = c.config();
    if let cpal::SupportedBufferSize::Range { min, max } = c.buffer_size() {
        let mut want = (config.sample_rate as f64 * period.as_secs_f64()) as u32;
        if is_pipewire(device) && want < 128 {
            // PipeWire runs its graph in powers of two and grants the largest not above what
            // is asked: the 2 ms preset's 2.5 ms (120 frames) ran at 64, waking every device
            // thread 750 times a second. Rounded up to 128 it runs at 2.67 ms: 25 % less CPU
            // per side for the same heard delay (15.1-15.3 ms against 10.9-15.3, floor 16;
            // `bench/latency.py --route native`). Longer periods are left to round down:
            // 256-frame periods beat against 240-frame packets, and the default preset's heard
            // delay rose from 18.3-18.9 ms to 28.0-28.4 for 20 % less CPU.
            want = want.next_power_of_two();
        }
        config.buffer_size = cpal::BufferSize::Fixed(want.clamp(*min, *max));
    }
    config
}

#[cfg(target_os = "linux")]
fn is_pipewire(device: &cpal::Device) -> bool {
    device
        .id()
        .is_ok_and(|id| id.host() == cpal::HostId::PipeWire)
}

#[cfg(not(target_os = "linux"))]
fn is_pipewire(_: &cpal::Device) -> bool {
    false
}
