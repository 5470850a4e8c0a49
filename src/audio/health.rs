//! A device stream's health, as its error callback reports it, and the schedule on which a
//! lost device is looked for again.
//!
//! A stream's errors come on the audio thread, sometimes thousands a second (an ALSA worker
//! whose sound server went away reports one per poll). The callback only counts them here, in
//! atomics; the first error that ends the stream marks it failed, and the thread that holds the
//! stream drops it and reports once. The engine then sees [`Health::failed`] and opens the
//! same device again on a [`Retry`] schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What went wrong with one device stream. Written from the audio thread with relaxed
/// atomics only.
#[derive(Debug, Default)]
pub struct Health {
    failed: AtomicBool,
    glitches: AtomicU64,
    repeats: AtomicU64,
    /// Why the stream failed, once the thread that held it has closed it (never touched by
    /// the audio thread).
    closed: Mutex<Option<String>>,
}

impl Health {
    /// Counts an error that leaves the stream running (an under- or overrun). Real-time safe.
    pub fn glitch(&self) {
        self.glitches.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the stream failed; true for the first error that does (the one worth telling).
    /// Real-time safe.
    pub fn fail(&self) -> bool {
        let first = !self.failed.swap(true, Ordering::AcqRel);
        if !first {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// True once an error has ended the stream.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Says that the failed stream is closed, and why it failed (the holding thread, once).
    pub fn close(&self, why: String) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Why the stream failed, once it is closed and the device may be opened again.
    /// Cheap while the stream is healthy (one atomic load): the network and media threads ask
    /// for every packet.
    pub fn closed(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Errors that left the stream running, so far.
    pub fn glitches(&self) -> u64 {
        self.glitches.load(Ordering::Relaxed)
    }

    /// Errors reported after the one that ended the stream, before it was closed.
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }
}

/// When to look for a lost device again: [`Retry::FIRST`] after the loss, doubling to
/// [`Retry::MOST`], for as long as it takes.
#[derive(Debug, Clone)]
pub struct Retry {
    next: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Retry {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(200);
    /// The longest pause: a device that returns is heard again within about this long (an
    /// attempt to open one costs a few milliseconds of CPU). One second, so that an attempt
    /// that comes while a sound server is still starting (it answers, its devices are not
    /// there yet) is followed within a second by one that finds them: back within 3 s.
    pub const MOST: Duration = Duration::from_secs(1);
    /// How long a device opened again must run before it counts as back: a stream may open
    /// and fail at its first callbacks while a sound server settles after a restart.
    pub const PROBATION: Duration = Duration::from_millis(500);

    /// The pause before the next attempt; each call doubles the one after, up to the most.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_the_one_told_and_the_rest_are_counted() {
        let h = Health::default();
        assert!(!h.failed());
        h.glitch();
        assert!(!h.failed(), "an xrun leaves the stream running");
        let told: usize = (0..10_000).map(|_| usize::from(h.fail())).sum();
        assert_eq!(told, 1);
        assert!(h.failed());
        assert_eq!((h.glitches(), h.repeats()), (1, 9_999));
        assert_eq!(h.closed(), None, "not closed until its holder says so");
        h.close("gone".into());
        assert_eq!(h.closed().as_deref(), Some("gone"));
    }

    #[test]
    fn retries_double_from_a_fifth_of_a_second_to_one_second() {
        let mut r = Retry::default();
        let got: Vec<u64> = (0..6).map(|_| r.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [200, 400, 800, 1000, 1000, 1000]);
    }
}
