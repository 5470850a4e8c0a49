//! Real devices through cpal. The only module that names cpal.
//!
//! Callbacks run on the host's real-time thread. A capture callback only moves samples into a
//! preallocated rtrb ring and bumps atomic counters. A playback callback runs the client's
//! playout ([`Pull`], `audio::playout`): it takes the network thread's arrivals from a ring,
//! then decodes, conceals and resamples what it plays, with buffers sized in advance; it never
//! blocks, locks, logs or makes a system call (a sink with nothing attached plays what a ring
//! holds). An error callback only counts and rings (`stream`). cpal streams may not be `Send`,
//! so each one lives on a small thread of its own (`stream`), which drops it when asked or as
//! soon as it fails.

mod devices;
mod host;
mod quiet;
mod stream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cpal::traits::DeviceTrait;
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use super::health::Health;
use super::{
    AudioError, AudioHost, Capture, DeviceKind, DeviceSpec, Pull, Sink, Source, StreamFormat,
};
use devices::{backend, choose_config, find_device, find_loopback, Found};
pub use devices::{host_name, list_devices, resolve, DeviceInfo};
pub use host::prepare_environment;
use stream::{run_stream, StreamThread};

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
    host: AudioHost,
    spec: &DeviceSpec,
    kind: DeviceKind,
    want: Option<StreamFormat>,
    period: Duration,
) -> Result<Box<dyn Source>, AudioError> {
    let loopback = kind == DeviceKind::Output;
    let found = if loopback {
        find_loopback(host, spec)?
    } else {
        find_device(host, spec, DeviceKind::Input)?
    };
    // WASAPI loopback: an output device opened for input.
    let as_input = !(loopback && cfg!(windows));
    let want = Some(want.unwrap_or(StreamFormat {
        sample_rate: 48_000,
        channels: 2,
    }));
    let (config, sample_format) = if as_input {
        choose_config(&found.device, true, want, &found.info.id, period)?
    } else {
        choose_config(&found.device, false, want, &found.info.id, period)?
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
    delay: Arc<crate::audio::DelayCell>,
    clock: Arc<crate::audio::stamp::StampCell>,
    wake: Option<Arc<crate::audio::wake::Wake>>,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static
where
    T: SizedSample,
    i16: FromSample<T>,
{
    let keep = device_channels.min(2);
    // Frames pushed so far (the reader's count of frames read meets it).
    let mut delivered: u64 = 0;
    move |data: &[T], info| {
        let t = info.timestamp();
        // Saturates at zero should a backend's clocks disagree.
        let held = t.callback.duration_since(t.capture);
        delay.set(held);
        if let Some(entered) = std::time::Instant::now().checked_sub(held) {
            clock.record(delivered, entered);
        }
        for frame in data.chunks_exact(device_channels) {
            // The ring's space is a whole number of frames: a frame goes in whole or not at all.
            let mut pushed = false;
            for &s in &frame[..keep] {
                if producer.push(<i16 as Sample>::from_sample(s)).is_err() {
                    overruns.fetch_add(1, Ordering::Relaxed);
                } else {
                    pushed = true;
                }
            }
            delivered += u64::from(pushed);
        }
        if let Some(w) = &wake {
            // Only once the reader's packet is all there (what the ring holds, counted after
            // this delivery was published).
            w.notify_at(producer.buffer().capacity() - producer.slots());
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
                Ok(c) => {
                    tracing::debug!("capture {name}: buffer {buffer_size:?}");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!("capture {name}: buffer {buffer_size:?} refused: {e}");
                    last = Some(e);
                }
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
        let device_delay = Arc::new(crate::audio::DelayCell::default());
        let clock = Arc::new(crate::audio::stamp::StampCell::default());
        let health = Arc::new(Health::default());
        let (over, delay, name) = (overruns.clone(), device_delay.clone(), name.to_owned());
        let stamps = clock.clone();
        let wake = crate::audio::wake::Wake::new().map(Arc::new);
        let waker = wake.clone();
        let device = device.clone();
        let dev_ch = usize::from(config.channels);
        let guard = run_stream(
            name.clone(),
            config.sample_rate,
            health.clone(),
            move |on_err| {
                let stream = match sample_format {
                    SampleFormat::F32 => device.build_input_stream(
                        config,
                        input_callback::<f32>(producer, dev_ch, over, delay, stamps, waker),
                        on_err,
                        None,
                    ),
                    SampleFormat::I16 => device.build_input_stream(
                        config,
                        input_callback::<i16>(producer, dev_ch, over, delay, stamps, waker),
                        on_err,
                        None,
                    ),
                    SampleFormat::I32 => device.build_input_stream(
                        config,
                        input_callback::<i32>(producer, dev_ch, over, delay, stamps, waker),
                        on_err,
                        None,
                    ),
                    other => return Err(AudioError::Format(format!("{other:?}"))),
                };
                stream.map_err(|e| backend(&name, e))
            },
        )?;
        Ok(Capture::from_ring(
            consumer,
            format,
            overruns,
            device_delay,
            wake,
            Box::new(guard),
        )
        .with_clock(clock)
        .with_health(health))
    }
}

/// Plays on a cpal output device: its callback pulls from an attached [`Pull`] (a client's
/// playout), or else plays what [`Sink::write`] queued in an SPSC ring.
pub struct CpalSink {
    id: String,
    format: StreamFormat,
    producer: rtrb::Producer<f32>,
    capacity: usize,
    /// Samples the callback had to make up with silence.
    pub underruns: Arc<AtomicU64>,
    /// What the device reports between a callback and the playing of its first sample.
    delay: Arc<crate::audio::DelayCell>,
    /// Pullers for the callback to take up (`None`: back to the queue).
    handoff: rtrb::Producer<Option<Box<dyn Pull>>>,
    /// Pullers the callback has let go of, dropped here rather than on the audio thread.
    retired: rtrb::Consumer<Box<dyn Pull>>,
    /// Whether the stream still runs.
    health: Arc<Health>,
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

/// What the output callback owns.
struct OutputFeed {
    /// What [`Sink::write`] queued (used while no puller is attached).
    consumer: rtrb::Consumer<f32>,
    handoff: rtrb::Consumer<Option<Box<dyn Pull>>>,
    retired: rtrb::Producer<Box<dyn Pull>>,
    puller: Option<Box<dyn Pull>>,
    /// The puller's output before conversion to the device's sample type.
    scratch: Vec<f32>,
}

impl OutputFeed {
    /// Takes up the pullers handed over since the last callback.
    fn take_handoffs(&mut self) {
        while let Ok(next) = self.handoff.pop() {
            if next.is_some() {
                // What was queued before the puller came is stale by now.
                let queued = self.consumer.slots();
                if let Ok(chunk) = self.consumer.read_chunk(queued) {
                    chunk.commit_all();
                }
            }
            if let Some(old) = std::mem::replace(&mut self.puller, next) {
                // The ring has room for every handoff's predecessor; were it full, dropping
                // here (a deallocation) is the lesser harm.
                let _ = self.retired.push(old);
            }
        }
    }
}

fn output_callback<T>(
    mut feed: OutputFeed,
    underruns: Arc<AtomicU64>,
    delay: Arc<crate::audio::DelayCell>,
) -> impl FnMut(&mut [T], &cpal::OutputCallbackInfo) + Send + 'static
where
    T: SizedSample + FromSample<f32>,
{
    move |data: &mut [T], info| {
        let t = info.timestamp();
        delay.set(t.playback.duration_since(t.callback));
        feed.take_handoffs();
        if let Some(puller) = feed.puller.as_mut() {
            if feed.scratch.len() < data.len() {
                // Once, at the first callback of a size never seen (capacity is reserved for
                // 50 ms at 48 kHz stereo up front).
                feed.scratch.resize(data.len(), 0.0);
            }
            let buf = &mut feed.scratch[..data.len()];
            puller.pull(buf, std::time::Instant::now());
            for (out, &s) in data.iter_mut().zip(buf.iter()) {
                *out = <T as Sample>::from_sample(s);
            }
            return;
        }
        for out in data.iter_mut() {
            *out = match feed.consumer.pop() {
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
pub fn open_sink(
    host: AudioHost,
    spec: &DeviceSpec,
    stream: StreamFormat,
    period: Duration,
) -> Result<Box<dyn Sink>, AudioError> {
    let found = find_device(host, spec, DeviceKind::Output)?;
    let id = found.info.id.clone();
    let (config, sample_format) = choose_config(&found.device, false, Some(stream), &id, period)?;
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
            Ok(s) => {
                tracing::debug!("playback {id}: buffer {buffer_size:?}");
                return Ok(Box::new(s));
            }
            Err(e) => {
                tracing::debug!("playback {id}: buffer {buffer_size:?} refused: {e}");
                last = Some(e);
            }
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
    let (handoff, handoff_rx) = rtrb::RingBuffer::<Option<Box<dyn Pull>>>::new(HANDOFFS);
    let (retire_tx, retired) = rtrb::RingBuffer::<Box<dyn Pull>>::new(HANDOFFS);
    let feed = OutputFeed {
        consumer,
        handoff: handoff_rx,
        retired: retire_tx,
        puller: None,
        scratch: Vec::with_capacity(4_800),
    };
    let underruns = Arc::new(AtomicU64::new(0));
    let delay = Arc::new(crate::audio::DelayCell::default());
    let (under, callback_delay) = (underruns.clone(), delay.clone());
    let name = id.to_owned();
    let device = device.clone();
    let health = Arc::new(Health::default());
    let guard = run_stream(
        name.clone(),
        config.sample_rate,
        health.clone(),
        move |on_err| {
            let s = match sample_format {
                SampleFormat::F32 => device.build_output_stream(
                    config,
                    output_callback::<f32>(feed, under, callback_delay),
                    on_err,
                    None,
                ),
                SampleFormat::I16 => device.build_output_stream(
                    config,
                    output_callback::<i16>(feed, under, callback_delay),
                    on_err,
                    None,
                ),
                SampleFormat::I32 => device.build_output_stream(
                    config,
                    output_callback::<i32>(feed, under, callback_delay),
                    on_err,
                    None,
                ),
                other => return Err(AudioError::Format(format!("{other:?}"))),
            };
            s.map_err(|e| backend(&name, e))
        },
    )?;
    Ok(CpalSink {
        id: id.to_owned(),
        format,
        producer,
        capacity,
        underruns,
        delay,
        handoff,
        retired,
        health,
        _guard: guard,
    })
}

/// Pullers in flight between the sink and its callback at once (each attach or detach is one).
const HANDOFFS: usize = 8;

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
    fn device_delay(&self) -> Option<std::time::Duration> {
        self.delay.get()
    }
    fn fault(&self) -> Option<String> {
        self.health.closed()
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
    fn attach(&mut self, puller: Box<dyn Pull>) -> Result<(), Box<dyn Pull>> {
        while self.retired.pop().is_ok() {}
        if self.handoff.is_full() {
            // The callback has taken none of the last handoffs: the device is not running.
            return Err(puller);
        }
        // Cannot fail: this is the ring's only producer, and it has room.
        let _ = self.handoff.push(Some(puller));
        Ok(())
    }
    fn detach(&mut self) {
        while self.retired.pop().is_ok() {}
        // A full ring means the callback has not run since: nothing to take back.
        let _ = self.handoff.push(None);
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        // Let what is queued play out (bounded: the ring holds at most half a second).
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(600);
        let queued = |s: &Self| (s.capacity - s.producer.slots()) / usize::from(s.format.channels);
        while queued(self) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}
