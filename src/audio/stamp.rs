//! Where a stream was at an instant, published by one thread (a device callback) and read by
//! others without a lock: the capture's "frame N entered the device at T" and the playout's
//! "stream position P leaves the speaker at T", from which the end-to-end latency is measured.

use std::sync::atomic::{fence, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The instant the stamps count from (the first use in this process).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn to_nanos(at: Instant) -> i64 {
    let o = origin();
    let signed = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if at >= o {
        signed(at - o)
    } else {
        -signed(o - at)
    }
}

fn from_nanos(n: i64) -> Option<Instant> {
    let o = origin();
    let d = Duration::from_nanos(n.unsigned_abs());
    if n >= 0 {
        o.checked_add(d)
    } else {
        o.checked_sub(d)
    }
}

/// The instant `frames` frames at `rate` after `at` (before it when negative).
pub fn shift(at: Instant, frames: i64, rate: u32) -> Option<Instant> {
    let d = Duration::from_secs_f64(frames.unsigned_abs() as f64 / f64::from(rate.max(1)));
    if frames >= 0 {
        at.checked_add(d)
    } else {
        at.checked_sub(d)
    }
}

/// A (frame count, instant) pair behind a sequence lock: one writer, which never waits (atomic
/// stores only: fit for a real-time callback), and readers that see both halves of one write
/// or nothing.
#[derive(Debug)]
pub struct StampCell {
    /// Odd while a write is under way; 0 until the first.
    seq: AtomicU64,
    frames: AtomicU64,
    nanos: AtomicI64,
}

impl Default for StampCell {
    fn default() -> Self {
        // Fixes the origin now, so that a callback never initialises it.
        let _ = origin();
        Self {
            seq: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            nanos: AtomicI64::new(0),
        }
    }
}

impl StampCell {
    /// Records that frame `frames` is at `at`. One thread writes a cell at a time.
    pub fn record(&self, frames: u64, at: Instant) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // The odd count is visible before either half changes ...
        fence(Ordering::Release);
        self.frames.store(frames, Ordering::Relaxed);
        self.nanos.store(to_nanos(at), Ordering::Relaxed);
        // ... and both halves before the even one.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Forgets what was recorded (only while nothing writes: a new stream's positions start
    /// over).
    pub fn clear(&self) {
        self.seq.store(0, Ordering::Release);
    }

    /// The last pair recorded; `None` before the first, or if writes kept racing the read.
    pub fn read(&self) -> Option<(u64, Instant)> {
        for _ in 0..8 {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let frames = self.frames.load(Ordering::Relaxed);
            let nanos = self.nanos.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return if before == 0 {
                    None
                } else {
                    Some((frames, from_nanos(nanos)?))
                };
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_cell_is_empty_until_written_and_then_gives_back_what_was_written() {
        let cell = StampCell::default();
        assert_eq!(cell.read(), None);
        let t = Instant::now();
        let before = t
            .checked_sub(Duration::from_secs(2))
            .expect("a clock that old");
        cell.record(480, before);
        assert_eq!(cell.read(), Some((480, before)));
        cell.record(960, t);
        assert_eq!(cell.read(), Some((960, t)));
        cell.clear();
        assert_eq!(cell.read(), None);
    }

    #[test]
    fn a_reader_never_sees_halves_of_two_writes() {
        // The writer keeps frames and time in step (frame n at origin + n µs); a torn read
        // would pair one write's count with another's time.
        let cell = Arc::new(StampCell::default());
        let stop = Arc::new(AtomicBool::new(false));
        let base = Instant::now();
        let writer = {
            let (cell, stop) = (cell.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    cell.record(n, base + Duration::from_micros(n));
                }
                n
            })
        };
        let (mut seen, mut tries) = (0, 0u64);
        while seen < 100_000 && tries < 100_000_000 {
            tries += 1;
            if let Some((n, at)) = cell.read() {
                assert_eq!(at, base + Duration::from_micros(n), "torn at {n}");
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().expect("writer");
        assert!(
            written > 1000 && seen > 1000,
            "{written} writes, {seen} reads"
        );
    }

    #[test]
    fn shifting_by_frames_moves_by_their_duration_either_way() {
        let t = Instant::now();
        assert_eq!(shift(t, 480, 48_000), Some(t + Duration::from_millis(10)));
        assert_eq!(shift(t + Duration::from_secs(1), -48_000, 48_000), Some(t));
    }
}
