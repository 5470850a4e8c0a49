//! When a client tries again (DESIGN.md §3.5): at once the first time, then after a pause that
//! starts at [`BACKOFF_START`] and doubles up to [`BACKOFF_MAX`]; a session that was established
//! starts the count afresh.

use std::time::Duration;

use super::{BACKOFF_MAX, BACKOFF_START};

/// A client's reconnection schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    limit: u32,
    attempt: u32,
    delay: Duration,
}

impl Backoff {
    /// At most `limit` attempts in a row that fail before a session (0: no limit).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            attempt: 0,
            delay: BACKOFF_START,
        }
    }

    /// Counts an attempt about to be made; returns its number (from 1).
    pub fn attempt(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    /// A session was established: the next failure starts from the shortest pause.
    pub fn connected(&mut self) {
        self.attempt = 0;
        self.delay = BACKOFF_START;
    }

    /// Whether the attempts allowed have all failed.
    pub fn exhausted(&self) -> bool {
        self.limit != 0 && self.attempt >= self.limit
    }

    /// The pause before the next attempt (each one twice the last, up to [`BACKOFF_MAX`]).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_the_cap_and_restart_after_a_session() {
        let mut b = Backoff::new(0);
        let pauses: Vec<u64> = (0..6)
            .map(|_| {
                b.attempt();
                b.next_delay().as_millis() as u64
            })
            .collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 5000, 5000]);
        assert!(!b.exhausted(), "no limit");
        b.connected();
        assert_eq!(b.attempt(), 1);
        assert_eq!(b.next_delay(), BACKOFF_START);
    }

    #[test]
    fn a_limit_counts_attempts_in_a_row() {
        let mut b = Backoff::new(3);
        for n in 1..=3 {
            assert!(!b.exhausted());
            assert_eq!(b.attempt(), n);
        }
        assert!(b.exhausted());
        b.connected();
        assert!(!b.exhausted());
    }
}
