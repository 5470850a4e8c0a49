//! The thread that holds a cpal stream: cpal streams may not be `Send`, so each one lives on a
//! small thread of its own, which drops it when asked, or at once when its error callback says
//! the stream failed (see [`crate::audio::health`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cpal::traits::StreamTrait;

use super::devices::backend;
use super::quiet;
use crate::audio::health::Health;
use crate::audio::wake::Wake;
use crate::audio::AudioError;

/// Holds a cpal stream on its own thread until dropped, or until its error callback says the
/// stream failed: then it drops the stream at once (which ends the host's worker thread, and
/// with it any spinning on a device that is gone) and says so once.
pub(super) struct StreamThread {
    holder: Arc<Holder>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.holder.stop.store(true, Ordering::Release);
        self.holder.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What wakes the thread that holds a stream: a stop, or a failure told by the stream's error
/// callback.
struct Holder {
    stop: AtomicBool,
    bell: Option<Wake>,
}

impl Holder {
    /// Wakes the holding thread. Real-time safe (an eventfd write, where there is one).
    fn ring(&self) {
        if let Some(b) = &self.bell {
            b.notify();
        }
    }

    /// Sleeps until rung (or a second passes: a safety net); without an eventfd, a tenth of a
    /// second.
    fn sleep(&self) {
        #[cfg(target_os = "linux")]
        if let Some(b) = &self.bell {
            b.wait(Duration::from_secs(1));
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A stream's error callback: it counts, keeps the first error that ends the stream, and wakes
/// the holder. It never blocks, locks, allocates or logs (an error after the first is dropped
/// here; the host allocated its message on this thread already).
pub(super) type OnError = Box<dyn FnMut(cpal::Error) + Send + 'static>;

fn on_error(health: Arc<Health>, holder: Arc<Holder>) -> (OnError, rtrb::Consumer<cpal::Error>) {
    let (mut first, told) = rtrb::RingBuffer::new(1);
    let callback = move |e: cpal::Error| match e.kind() {
        cpal::ErrorKind::Xrun
        | cpal::ErrorKind::DeviceChanged
        | cpal::ErrorKind::RealtimeDenied => health.glitch(),
        _ => {
            if health.fail() {
                let _ = first.push(e);
                holder.ring();
            }
        }
    };
    (Box::new(callback), told)
}

/// Builds a stream with `build` (given the error callback to use) on a dedicated thread and
/// keeps it playing until the guard drops or `health` says it failed. Once it has run a
/// second, the period the sound server granted (frames per callback at `rate`) is logged.
pub(super) fn run_stream<F>(
    name: String,
    rate: u32,
    health: Arc<Health>,
    build: F,
) -> Result<StreamThread, AudioError>
where
    F: FnOnce(OnError) -> Result<cpal::Stream, AudioError> + Send + 'static,
{
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), AudioError>>(1);
    let holder = Arc::new(Holder {
        stop: AtomicBool::new(false),
        bell: Wake::new(),
    });
    let held = holder.clone();
    let thread_name = format!("device {name}");
    let thread = thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            quiet::this_thread();
            let (callback, mut told) = on_error(health.clone(), held.clone());
            let mut stream = match build(callback)
                .and_then(|s| s.play().map(|()| s).map_err(|e| backend(&name, e)))
            {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    Some(s)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut glitches = 0;
            let mut granted_told = false;
            while !held.stop.load(Ordering::Acquire) {
                if stream.is_some() && health.failed() {
                    drop(stream.take());
                    let why = told
                        .pop()
                        .map_or_else(|_| "an unknown error".to_owned(), |e| e.to_string());
                    tracing::debug!(
                        "{name} failed ({why}; {} more errors before its stream closed)",
                        health.repeats()
                    );
                    // The engine says it once, with what it does about it.
                    health.close(why);
                }
                let now = health.glitches();
                if now > glitches {
                    tracing::debug!("{name}: {} under- or overruns", now - glitches);
                    glitches = now;
                }
                held.sleep();
                if !granted_told && !health.failed() && !held.stop.load(Ordering::Acquire) {
                    // After the holder's first sleep (a second, unless rung): the host knows by
                    // then what it gave (PipeWire: the graph's quantum).
                    if let Some(frames) = stream.as_ref().and_then(|s| s.buffer_size().ok()) {
                        if frames > 0 && rate > 0 {
                            let ms = f64::from(frames) * 1e3 / f64::from(rate);
                            tracing::info!(
                                "{name}: periods of {frames} frames ({ms:.2} ms) granted"
                            );
                        }
                    }
                }
                granted_told = true;
            }
            drop(stream);
        })
        .map_err(|e| backend("thread", e))?;
    let guard = StreamThread {
        holder,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(guard),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(backend("device thread", "exited before the stream started")),
    }
}
