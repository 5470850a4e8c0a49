//! The heartbeat clock (DESIGN.md §3.5): when the next heartbeat is due and what it says, and
//! what the peer's heartbeats tell of the round trip and of its clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::HEARTBEAT_INTERVAL;
use crate::protocol::frame::{Anchor, Heartbeat};

/// When the next heartbeat is due, and what it says (DESIGN.md §3.5): one per
/// [`HEARTBEAT_INTERVAL`], numbered, stamped with the time since the session began, and
/// echoing the peer's last stamp so that each side learns the round-trip time and the offset of
/// the peer's clock (NTP's four timestamps).
#[derive(Debug, Clone)]
pub struct HeartbeatClock {
    started: Instant,
    next: Instant,
    seq: u32,
    /// The peer's last stamp and when it arrived.
    last_peer: Option<(u64, Instant)>,
    /// Recent (round trip, offset) samples, µs; the lowest round trip's offset is the truest.
    samples: VecDeque<(u64, i64)>,
}

impl HeartbeatClock {
    /// The first heartbeat is due at once.
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            next: now,
            seq: 0,
            last_peer: None,
            samples: VecDeque::with_capacity(8),
        }
    }

    fn local_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }

    /// When the next one is due (for the read deadline).
    pub fn next_at(&self) -> Instant {
        self.next
    }

    /// The heartbeat to send now, if one is due, carrying the sender's counters.
    pub fn poll(&mut self, now: Instant, received: u64, lost: u64) -> Option<Heartbeat> {
        if now < self.next {
            return None;
        }
        self.next += HEARTBEAT_INTERVAL;
        self.seq = self.seq.wrapping_add(1);
        let (echo_time_us, echo_hold_us) = match self.last_peer {
            Some((t, at)) => (
                t,
                u32::try_from(now.saturating_duration_since(at).as_micros())
                    .unwrap_or(Heartbeat::NO_ECHO - 1),
            ),
            None => (0, Heartbeat::NO_ECHO),
        };
        Some(Heartbeat {
            seq: self.seq,
            time_us: self.local_us(now),
            received,
            lost,
            echo_time_us,
            echo_hold_us,
            anchor: None,
        })
    }

    /// `at` on this session's clock, µs (negative before the session began).
    pub fn clock_us(&self, at: Instant) -> i64 {
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        if at >= self.started {
            us(at - self.started)
        } else {
            -us(self.started - at)
        }
    }

    /// The end-to-end latency, from the peer's `anchor` (the sound at one stream position and
    /// when the peer captured it, on its clock) and `played` (a stream position and when it
    /// plays here): the peer's capture time of that position, moved to our clock by the
    /// measured offset, against its playing time. `None` until there is an offset, or if the
    /// clocks disagree so far that the figure would be negative.
    pub fn latency(&self, anchor: Anchor, played: (u64, Instant), rate: u32) -> Option<Duration> {
        let offset = self.offset_us()?;
        let (position, at) = played;
        let frames = position as f64 - anchor.position as f64;
        let captured_theirs = anchor.time_us as f64 + frames * 1e6 / f64::from(rate.max(1));
        let captured_ours = captured_theirs - offset as f64;
        let us = self.clock_us(at) as f64 - captured_ours;
        if us < 0.0 {
            return None;
        }
        // From the network: a wild anchor gives no figure, never a panic.
        Duration::try_from_secs_f64(us / 1e6).ok()
    }

    /// A heartbeat from the peer arrived at `now`.
    pub fn on_peer(&mut self, hb: &Heartbeat, now: Instant) {
        self.last_peer = Some((hb.time_us, now));
        if hb.echo_hold_us == Heartbeat::NO_ECHO {
            return;
        }
        // t1: our stamp, echoed; t2 = t3 - hold: when the peer got it; t3: the peer's stamp;
        // t4: now. A forged or confused echo (from the future) is ignored.
        let (t1, t4) = (hb.echo_time_us, self.local_us(now));
        let hold = u64::from(hb.echo_hold_us);
        let Some(rtt) = t4.checked_sub(t1).and_then(|d| d.checked_sub(hold)) else {
            return;
        };
        // Peer values are any 64-bit numbers: the sum is taken wide, and an offset beyond i64
        // is no sample.
        let (t1, t3, t4, hold) = (
            i128::from(t1),
            i128::from(hb.time_us),
            i128::from(t4),
            i128::from(hold),
        );
        let t2 = t3 - hold;
        let Ok(offset) = i64::try_from(((t2 - t1) + (t3 - t4)) / 2) else {
            return;
        };
        if self.samples.len() == 8 {
            self.samples.pop_front();
        }
        self.samples.push_back((rtt, offset));
    }

    /// The round-trip time: the lowest of the last eight samples (queueing only adds).
    pub fn rtt(&self) -> Option<Duration> {
        self.samples
            .iter()
            .map(|&(r, _)| r)
            .min()
            .map(Duration::from_micros)
    }

    /// The peer's session clock minus ours, in µs, from the lowest-RTT sample.
    pub fn offset_us(&self) -> Option<i64> {
        self.samples
            .iter()
            .min_by_key(|&&(r, _)| r)
            .map(|&(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_once_per_interval_numbered() {
        let t0 = Instant::now();
        let mut c = HeartbeatClock::new(t0);
        let first = c.poll(t0, 5, 1).expect("due at once");
        assert_eq!(
            (first.seq, first.time_us, first.received, first.lost),
            (1, 0, 5, 1)
        );
        assert!(c.poll(t0 + Duration::from_millis(999), 0, 0).is_none());
        assert_eq!(c.next_at(), t0 + Duration::from_secs(1));
        let second = c
            .poll(t0 + Duration::from_millis(1_010), 0, 0)
            .expect("due");
        assert_eq!((second.seq, second.time_us), (2, 1_010_000));
        assert_eq!(second.echo_hold_us, Heartbeat::NO_ECHO, "nothing heard yet");
    }

    #[test]
    fn echoed_stamps_give_round_trip_and_offset() {
        // Two clocks: the peer's session began 5 s before ours; the link takes 3 ms each way.
        let t0 = Instant::now();
        let mut ours = HeartbeatClock::new(t0);
        let mut peer = HeartbeatClock::new(t0 - Duration::from_secs(5));
        let one_way = Duration::from_millis(3);
        let hb = ours.poll(t0, 0, 0).expect("due");
        peer.on_peer(&hb, t0 + one_way);
        // The peer answers 200 ms after hearing us.
        let sent = t0 + one_way + Duration::from_millis(200);
        peer.next = sent;
        let answer = peer.poll(sent, 0, 0).expect("due");
        assert_eq!(answer.echo_hold_us, 200_000);
        ours.on_peer(&answer, sent + one_way);
        assert_eq!(ours.rtt(), Some(2 * one_way));
        assert_eq!(ours.offset_us(), Some(5_000_000));
        // A bogus echo from the future is ignored.
        let mut bogus = answer;
        bogus.echo_time_us = u64::MAX / 2;
        ours.on_peer(&bogus, sent + one_way);
        assert_eq!(ours.rtt(), Some(2 * one_way));
    }

    #[test]
    fn wild_stamps_from_the_peer_never_overflow() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(2);
        for (time_us, echo_time_us, hold) in [
            (1 << 63, 0, 1),
            (u64::MAX, 0, u32::MAX - 1),
            (0, 0, 0),
            (u64::MAX, u64::MAX, 0),
        ] {
            let mut ours = HeartbeatClock::new(t0);
            let hb = Heartbeat {
                seq: 1,
                time_us,
                received: u64::MAX,
                lost: u64::MAX,
                echo_time_us,
                echo_hold_us: hold,
                anchor: None,
            };
            ours.on_peer(&hb, now);
            // Whatever was taken is a round trip no longer than the time since our start.
            assert!(!matches!(ours.rtt(), Some(r) if r > Duration::from_secs(2)));
            // The echo of that stamp goes back as it came.
            let answer = ours.poll(now, 0, 0).expect("due");
            assert_eq!(answer.echo_time_us, time_us);
        }
    }

    #[test]
    fn latency_is_capture_on_the_peers_clock_against_playing_on_ours() {
        // The peer's session began 5 s before ours, 3 ms away.
        let t0 = Instant::now();
        let mut ours = HeartbeatClock::new(t0);
        let mut peer = HeartbeatClock::new(t0 - Duration::from_secs(5));
        let one_way = Duration::from_millis(3);
        let anchor_at = |peer: &HeartbeatClock, position: u64, captured: Instant| Anchor {
            position,
            time_us: peer.clock_us(captured),
        };
        let played = (48_000, t0 + Duration::from_secs(2));
        let a = anchor_at(&peer, 48_000, t0 + Duration::from_millis(1_960));
        assert_eq!(ours.latency(a, played, 48_000), None, "no offset yet");
        let hb = ours.poll(t0, 0, 0).expect("due");
        peer.on_peer(&hb, t0 + one_way);
        peer.next = t0 + one_way;
        let answer = peer.poll(t0 + one_way, 0, 0).expect("due");
        ours.on_peer(&answer, t0 + 2 * one_way);
        // Frame 48 000 was captured at 1.96 s and plays at 2 s: 40 ms.
        assert_eq!(
            ours.latency(a, played, 48_000),
            Some(Duration::from_millis(40))
        );
        // An anchor elsewhere in the stream, and a capture before our session began, say the
        // same: positions convert at the stream's rate.
        let b = anchor_at(&peer, 0, t0 + Duration::from_millis(960));
        assert_eq!(b.time_us, 5_960_000);
        assert_eq!(
            ours.latency(b, played, 48_000),
            Some(Duration::from_millis(40))
        );
        let before = anchor_at(&peer, 0, t0 - Duration::from_secs(6));
        assert!(before.time_us < 0);
        let early = (4_800, t0 - Duration::from_millis(5_800));
        assert_eq!(
            ours.latency(before, early, 48_000),
            Some(Duration::from_millis(100))
        );
        // A position played before it was captured: the clocks disagree; no figure.
        let late = anchor_at(&peer, 48_000, t0 + Duration::from_millis(2_010));
        assert_eq!(ours.latency(late, played, 48_000), None);
    }
}
