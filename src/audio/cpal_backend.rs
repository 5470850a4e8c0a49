//! Real devices through cpal. The only module that names cpal.
//!
//! Capture and playback callbacks run on the host's real-time thread: they only move samples
//! through a preallocated rtrb ring and bump atomic counters. cpal streams may not be `Send`, so
//! each one lives on a small thread of its own that parks until the stream is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use super::{AudioError, Capture, DeviceKind, DeviceSpec, Sink, Source, StreamFormat};

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

struct Found {
    info: DeviceInfo,
    device: cpal::Device,
}

fn backend(device: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Backend {
        device: device.to_owned(),
        message: e.to_string(),
    }
}

/// Enumerates devices, skipping any the host fails to describe (ALSA plugin PCMs often do).
fn enumerate() -> Result<Vec<Found>, AudioError> {
    let host = cpal::default_host();
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
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_else(|_| id.clone());
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

/// Lists the devices the host offers.
///
/// # Errors
/// [`AudioError::Backend`] when the host cannot enumerate at all.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    Ok(enumerate()?.into_iter().map(|f| f.info).collect())
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
            if let Some(pos) = candidates
                .iter()
                .position(|f| f.info.id == *n || f.info.name == *n)
            {
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

fn find_device(spec: &DeviceSpec, kind: DeviceKind) -> Result<Found, AudioError> {
    let all = enumerate()?;
    let host = cpal::default_host();
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
fn find_loopback(spec: &DeviceSpec) -> Result<Found, AudioError> {
    if cfg!(windows) {
        return find_device(spec, DeviceKind::Output);
    }
    let all = enumerate()?;
    let wanted = match spec {
        DeviceSpec::Index(_) => Some(find_device(spec, DeviceKind::Output)?.info.name),
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
fn choose_config(
    device: &cpal::Device,
    input: bool,
    want: Option<StreamFormat>,
    name: &str,
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
            return Ok((with_small_buffer(&b), b.sample_format()));
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
    Ok((with_small_buffer(&d), d.sample_format()))
}

/// Device buffer the callbacks work in: 5 ms where the device lets us choose, so that callbacks
/// come often and small (big ones force a deep queue, which is latency).
const DEVICE_BUFFER: std::time::Duration = std::time::Duration::from_millis(5);

fn with_small_buffer(c: &cpal::SupportedStreamConfig) -> StreamConfig {
    let mut config = c.config();
    if let cpal::SupportedBufferSize::Range { min, max } = c.buffer_size() {
        let want = (config.sample_rate as f64 * DEVICE_BUFFER.as_secs_f64()) as u32;
        config.buffer_size = cpal::BufferSize::Fixed(want.clamp(*min, *max));
    }
    config
}

/// Holds a cpal stream on its own thread until dropped.
struct StreamThread {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds a stream with `build` on a dedicated thread and keeps it playing until the guard drops.
fn run_stream<F>(name: String, build: F) -> Result<StreamThread, AudioError>
where
    F: FnOnce() -> Result<cpal::Stream, AudioError> + Send + 'static,
{
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), AudioError>>(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread_name = format!("device {name}");
    let thread = thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let stream =
                match build().and_then(|s| s.play().map(|()| s).map_err(|e| backend(&name, e))) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
            // Blocks until the guard drops its sender.
            let _ = stop_rx.recv();
            drop(stream);
        })
        .map_err(|e| backend("thread", e))?;
    let guard = StreamThread {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(guard),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(backend("device thread", "exited before the stream started")),
    }
}

/// Captures from a cpal input device (or, for `-o`, the monitor of an output).
pub struct CpalSource {
    found: Found,
    config: StreamConfig,
    sample_format: SampleFormat,
    loopback: bool,
}

impl std::fmt::Debug for CpalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpalSource {{ id: {:?} }}", self.found.info.id)
    }
}

/// Opens a capture device by spec.
///
/// # Errors
/// [`AudioError`] when no device matches or it offers no usable configuration.
pub fn open_source(
    spec: &DeviceSpec,
    kind: DeviceKind,
    want: Option<StreamFormat>,
) -> Result<Box<dyn Source>, AudioError> {
    let loopback = kind == DeviceKind::Output;
    let found = if loopback {
        find_loopback(spec)?
    } else {
        find_device(spec, DeviceKind::Input)?
    };
    // WASAPI loopback: an output device opened for input.
    let as_input = !(loopback && cfg!(windows));
    let want = Some(want.unwrap_or(StreamFormat {
        sample_rate: 48_000,
        channels: 2,
    }));
    let (config, sample_format) = if as_input {
        choose_config(&found.device, true, want, &found.info.id)?
    } else {
        choose_config(&found.device, false, want, &found.info.id)?
    };
    // Open the stream once now, so a device that cannot capture fails at start-up with its own
    // words, not when the first client arrives.
    let probe = CpalSource {
        found,
        config,
        sample_format,
        loopback,
    };
    let format = probe.format();
    drop(start_capture(
        &probe.found.device,
        &probe.found.info.id,
        probe.config,
        probe.sample_format,
        format,
    )?);
    let CpalSource {
        found,
        config,
        sample_format,
        loopback,
    } = probe;
    Ok(Box::new(CpalSource {
        found,
        config,
        sample_format,
        loopback,
    }))
}

fn input_callback<T>(
    mut producer: rtrb::Producer<i16>,
    device_channels: usize,
    overruns: Arc<AtomicU64>,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static
where
    T: SizedSample,
    i16: FromSample<T>,
{
    let keep = device_channels.min(2);
    move |data: &[T], _| {
        for frame in data.chunks_exact(device_channels) {
            for &s in &frame[..keep] {
                if producer.push(<i16 as Sample>::from_sample(s)).is_err() {
                    overruns.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Source for CpalSource {
    fn format(&self) -> StreamFormat {
        StreamFormat {
            sample_rate: self.config.sample_rate,
            channels: self.config.channels.min(2),
        }
    }

    fn describe(&self) -> String {
        let what = if self.loopback { "loopback of " } else { "" };
        format!("{what}{} ({})", self.found.info.id, self.found.info.name)
    }

    fn start(self: Box<Self>) -> Result<Capture, AudioError> {
        let format = self.format();
        let CpalSource {
            found,
            config,
            sample_format,
            ..
        } = *self;
        let name = found.info.id.clone();
        let mut last = None;
        for buffer_size in buffer_choices(config.buffer_size) {
            let config = StreamConfig {
                buffer_size,
                ..config
            };
            match start_capture(&found.device, &name, config, sample_format, format) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| backend(&name, "no configuration to try")))
    }
}

/// The buffer sizes to try: the one chosen, then the host's default.
fn buffer_choices(first: cpal::BufferSize) -> Vec<cpal::BufferSize> {
    match first {
        cpal::BufferSize::Default => vec![cpal::BufferSize::Default],
        fixed => vec![fixed, cpal::BufferSize::Default],
    }
}

fn start_capture(
    device: &cpal::Device,
    name: &str,
    config: StreamConfig,
    sample_format: SampleFormat,
    format: StreamFormat,
) -> Result<Capture, AudioError> {
    {
        let cap = (format.sample_rate as usize / 2).max(4096) * usize::from(format.channels);
        let (producer, consumer) = rtrb::RingBuffer::<i16>::new(cap);
        let overruns = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (over, name) = (overruns.clone(), name.to_owned());
        let device = device.clone();
        let dev_ch = usize::from(config.channels);
        let guard = run_stream(name.clone(), move || {
            let fail = failed.clone();
            let on_err = move |e: cpal::Error| {
                fail.store(true, Ordering::Relaxed);
                eprintln!("audio device error: {e}");
            };
            let stream = match sample_format {
                SampleFormat::F32 => device.build_input_stream(
                    config,
                    input_callback::<f32>(producer, dev_ch, over),
                    on_err,
                    None,
                ),
                SampleFormat::I16 => device.build_input_stream(
                    config,
                    input_callback::<i16>(producer, dev_ch, over),
                    on_err,
                    None,
                ),
                SampleFormat::I32 => device.build_input_stream(
                    config,
                    input_callback::<i32>(producer, dev_ch, over),
                    on_err,
                    None,
                ),
                other => return Err(AudioError::Format(format!("{other:?}"))),
            };
            stream.map_err(|e| backend(&name, e))
        })?;
        Ok(Capture::from_ring(
            consumer,
            format,
            overruns,
            Box::new(guard),
        ))
    }
}

/// Plays on a cpal output device, fed through an SPSC ring.
pub struct CpalSink {
    id: String,
    format: StreamFormat,
    producer: rtrb::Producer<f32>,
    capacity: usize,
    /// Samples the callback had to make up with silence.
    pub underruns: Arc<AtomicU64>,
    /// The largest number of frames one callback asked for.
    callback_frames: Arc<AtomicUsize>,
    _guard: StreamThread,
}

impl std::fmt::Debug for CpalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CpalSink {{ id: {:?}, format: {:?} }}",
            self.id, self.format
        )
    }
}

fn output_callback<T>(
    mut consumer: rtrb::Consumer<f32>,
    underruns: Arc<AtomicU64>,
    callback_frames: Arc<AtomicUsize>,
    channels: usize,
) -> impl FnMut(&mut [T], &cpal::OutputCallbackInfo) + Send + 'static
where
    T: SizedSample + FromSample<f32>,
{
    move |data: &mut [T], _| {
        // The feeder keeps this much queued: the largest request seen (an atomic max, RT-safe).
        callback_frames.fetch_max(data.len() / channels.max(1), Ordering::Relaxed);
        for out in data.iter_mut() {
            *out = match consumer.pop() {
                Ok(s) => <T as Sample>::from_sample(s),
                Err(_) => {
                    underruns.fetch_add(1, Ordering::Relaxed);
                    T::EQUILIBRIUM
                }
            };
        }
    }
}

/// Opens a playback device by spec at the configuration nearest to `stream`.
///
/// # Errors
/// [`AudioError`] when no device matches or the stream cannot start.
pub fn open_sink(spec: &DeviceSpec, stream: StreamFormat) -> Result<Box<dyn Sink>, AudioError> {
    let found = find_device(spec, DeviceKind::Output)?;
    let id = found.info.id.clone();
    let (config, sample_format) = choose_config(&found.device, false, Some(stream), &id)?;
    let format = StreamFormat {
        sample_rate: config.sample_rate,
        channels: config.channels,
    };
    let mut last = None;
    for buffer_size in buffer_choices(config.buffer_size) {
        let config = StreamConfig {
            buffer_size,
            ..config
        };
        match start_playback(&found.device, &id, config, sample_format, format) {
            Ok(s) => return Ok(Box::new(s)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| backend(&id, "no configuration to try")))
}

fn start_playback(
    device: &cpal::Device,
    id: &str,
    config: StreamConfig,
    sample_format: SampleFormat,
    format: StreamFormat,
) -> Result<CpalSink, AudioError> {
    // Half a second of room; the client keeps only a few milliseconds queued.
    let capacity = (format.sample_rate as usize / 2) * usize::from(format.channels);
    let (producer, consumer) = rtrb::RingBuffer::<f32>::new(capacity);
    let underruns = Arc::new(AtomicU64::new(0));
    let callback_frames = Arc::new(AtomicUsize::new(0));
    let (under, frames) = (underruns.clone(), callback_frames.clone());
    let name = id.to_owned();
    let device = device.clone();
    let ch = usize::from(config.channels);
    let guard = run_stream(name.clone(), move || {
        let on_err = |e: cpal::Error| eprintln!("audio device error: {e}");
        let s = match sample_format {
            SampleFormat::F32 => device.build_output_stream(
                config,
                output_callback::<f32>(consumer, under, frames, ch),
                on_err,
                None,
            ),
            SampleFormat::I16 => device.build_output_stream(
                config,
                output_callback::<i16>(consumer, under, frames, ch),
                on_err,
                None,
            ),
            SampleFormat::I32 => device.build_output_stream(
                config,
                output_callback::<i32>(consumer, under, frames, ch),
                on_err,
                None,
            ),
            other => return Err(AudioError::Format(format!("{other:?}"))),
        };
        s.map_err(|e| backend(&name, e))
    })?;
    Ok(CpalSink {
        id: id.to_owned(),
        format,
        producer,
        capacity,
        underruns,
        callback_frames,
        _guard: guard,
    })
}

impl Sink for CpalSink {
    fn format(&self) -> StreamFormat {
        self.format
    }
    fn describe(&self) -> String {
        self.id.clone()
    }
    fn clocked(&self) -> bool {
        true
    }
    fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }
    fn queued_frames(&self) -> usize {
        (self.capacity - self.producer.slots()) / usize::from(self.format.channels)
    }
    fn low_water_frames(&self) -> usize {
        // Enough for the next callback, and never below 10 ms (one late wake-up of the feeder).
        let callback = self.callback_frames.load(Ordering::Relaxed);
        (self.format.sample_rate as usize / 100).max(callback + callback / 2)
    }
    fn write(&mut self, samples: &[f32]) -> Result<usize, AudioError> {
        let ch = usize::from(self.format.channels);
        let room = self.producer.slots() / ch * ch;
        let n = samples.len().min(room);
        for &s in &samples[..n] {
            // Cannot fail: `n` is at most the free slots counted above.
            let _ = self.producer.push(s);
        }
        Ok(n / ch)
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        // Let what is queued play out (bounded: the ring holds at most half a second).
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(600);
        while self.queued_frames() > 0 && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}
