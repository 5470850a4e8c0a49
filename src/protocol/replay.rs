//! A sliding replay window over 64-bit packet counters, as in WireGuard (RFC 6479 style).
//!
//! `check` is a cheap test done *before* authenticating a datagram; `commit` records the counter
//! only *after* the datagram proved genuine, so forged packets cannot move the window.
//!
//! Datagrams that carry no tag (audio in plain mode) cannot prove anything, so for them
//! [`ReplayWindow::accept_unauthenticated`] bounds how far ahead the head may move: one spoofed
//! datagram with a huge counter would otherwise make every genuine one look old for the rest
//! of the session. A sender whose counter really jumps (a long outage) is followed after a
//! short run of datagrams that agree with each other.

const WORD_BITS: u64 = 64;
const WORDS: usize = 32;
/// Counters this far behind the newest one accepted are still accepted once (reordering).
pub const WINDOW: u64 = (WORDS as u64 - 1) * WORD_BITS;

/// How far ahead of the newest counter an unauthenticated datagram may be: half the window,
/// so that one forged counter leaves every genuine one still inside the window.
pub const MAX_JUMP: u64 = WINDOW / 2;
/// Unauthenticated datagrams outside the range, in a row and each a little ahead of the one
/// before, that move the window to them: 8 datagrams, 40 ms of audio at 5 ms a datagram.
pub const RESYNC_RUN: u32 = 8;

/// Which counters have been seen recently.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest counter committed plus one (0: none yet).
    next: u64,
    bitmap: [u64; WORDS],
    /// Unauthenticated datagrams out of range: the last one's counter and how many in a row.
    run: (u64, u32),
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter is fresh.
    pub fn new() -> Self {
        Self {
            next: 0,
            bitmap: [0; WORDS],
            run: (0, 0),
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        (
            ((counter / WORD_BITS) % WORDS as u64) as usize,
            1 << (counter % WORD_BITS),
        )
    }

    /// True when `counter` is new and not too old: worth authenticating.
    pub fn check(&self, counter: u64) -> bool {
        // No sender ever reaches the last counter; accepting it would overflow the head and
        // wrap the window back to zero (found by fuzzing).
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] & bit == 0
    }

    /// Records an authenticated counter. Returns false (and changes nothing) for a replay.
    pub fn commit(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the words the head moves into: they hold bits of counters a window ago.
            let new_word = counter / WORD_BITS;
            match self.next.checked_sub(1).map(|highest| highest / WORD_BITS) {
                None => self.bitmap = [0; WORDS],
                Some(old_word) => {
                    for w in (old_word + 1)..=new_word.min(old_word + WORDS as u64) {
                        self.bitmap[(w % WORDS as u64) as usize] = 0;
                    }
                }
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] |= bit;
        true
    }

    /// Records the counter of a datagram that carries no tag: as [`ReplayWindow::commit`], but
    /// only within [`MAX_JUMP`] ahead of the newest counter (or a window behind it). Counters out
    /// of that range are refused unless [`RESYNC_RUN`] of them in a row agree (each ahead of the
    /// last by at most `MAX_JUMP`), when the window moves to them. Returns false for a datagram
    /// to drop.
    pub fn accept_unauthenticated(&mut self, counter: u64) -> bool {
        if counter == u64::MAX {
            return false;
        }
        let in_range = self.next == 0
            || (counter >= self.next && counter - self.next < MAX_JUMP)
            || (counter < self.next && self.next - counter <= WINDOW);
        if in_range {
            self.run = (0, 0);
            return self.commit(counter);
        }
        let (last, len) = self.run;
        let follows = len > 0 && counter > last && counter - last <= MAX_JUMP;
        self.run = (counter, if follows { len + 1 } else { 1 });
        if self.run.1 < RESYNC_RUN {
            return false;
        }
        *self = Self::new();
        self.commit(counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::new();
        for c in [0u64, 2, 1, 5, 3, 4] {
            assert!(w.commit(c), "{c}");
        }
        for c in 0..6 {
            assert!(!w.check(c) && !w.commit(c), "{c} replayed");
        }
        assert!(w.commit(6));
    }

    #[test]
    fn slides_and_forgets_old_counters() {
        let mut w = ReplayWindow::new();
        assert!(w.commit(10));
        assert!(w.commit(10 + WINDOW + 100));
        assert!(!w.check(10), "too old");
        assert!(!w.check(50), "too old even though never seen");
        assert!(w.commit(10 + WINDOW + 50), "inside the window, unseen");
        assert!(!w.commit(10 + WINDOW + 50));
    }

    #[test]
    fn large_jumps_clear_stale_bits() {
        let mut w = ReplayWindow::new();
        for c in 0..(WINDOW + 64) {
            assert!(w.commit(c));
        }
        // Jump far ahead: counters just below the new head were never seen and must be accepted.
        let head = 100_000;
        assert!(w.commit(head));
        for c in (head - WINDOW + 1)..head {
            assert!(w.check(c), "{c} should be fresh");
        }
    }

    #[test]
    fn one_forged_counter_far_ahead_does_not_silence_the_sender() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            assert!(w.accept_unauthenticated(c));
        }
        // A spoofed datagram with a huge counter is refused; one just inside the bound moves
        // the head, but the genuine stream is still inside the window.
        assert!(!w.accept_unauthenticated(1 << 62));
        assert!(w.accept_unauthenticated(100 + MAX_JUMP - 1));
        for c in 100..1000 {
            assert!(w.accept_unauthenticated(c), "{c}");
        }
    }

    #[test]
    fn a_real_jump_is_followed_after_a_short_run() {
        let mut w = ReplayWindow::new();
        for c in 0..50 {
            assert!(w.accept_unauthenticated(c));
        }
        // The sender's datagrams were lost for a long while: its counter is far ahead.
        let resumed = 1_000_000;
        let taken: Vec<bool> = (resumed..resumed + 20)
            .map(|c| w.accept_unauthenticated(c))
            .collect();
        let first = taken.iter().position(|&t| t);
        assert_eq!(first, Some(RESYNC_RUN as usize - 1), "{taken:?}");
        assert!(taken[RESYNC_RUN as usize..].iter().all(|&t| t));
        // A genuine datagram between forged ones breaks their run: they never take the window.
        for i in 0..100 {
            assert!(!w.accept_unauthenticated(1 << 50 | i));
            assert!(w.accept_unauthenticated(resumed + 20 + i));
        }
        // And a replay of old datagrams is refused as ever.
        assert!(!w.accept_unauthenticated(resumed + 10));
    }

    #[test]
    fn the_last_counter_is_refused_without_wrapping() {
        let mut w = ReplayWindow::new();
        assert!(w.commit(5));
        assert!(!w.commit(u64::MAX));
        assert!(!w.check(5), "still remembers 5: the window did not wrap");
        assert!(w.commit(u64::MAX - 1));
    }

    #[test]
    fn matches_a_reference_model() {
        // Compare against a set-based model on a deterministic pseudo-random walk.
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut max: Option<u64> = None;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = max.unwrap_or(0);
            let c = (base + (x % 300)).saturating_sub(200);
            let expect = !seen.contains(&c) && max.is_none_or(|m| c > m || m - c <= WINDOW);
            assert_eq!(w.commit(c), expect, "counter {c}, max {max:?}");
            if expect {
                seen.insert(c);
                max = Some(max.map_or(c, |m| m.max(c)));
            }
        }
    }
}
