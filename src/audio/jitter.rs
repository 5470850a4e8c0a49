//! A jitter buffer for fixed-size packets: reorders, drops duplicates and late packets, and
//! conceals gaps. Sans-IO: every call takes `now`, so tests drive it with simulated time.
//!
//! Playout starts once the first packet has waited `target`; after that a missing packet is
//! declared lost either when the device needs audio now (`must_play`) or when a later packet has
//! itself waited `target` (the missing one had its chance). Storage is preallocated.

use std::time::{Duration, Instant};

/// Packets the buffer can hold ahead of the playout point.
pub const CAPACITY: usize = 128;

/// What `push` did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored for playout.
    Accepted,
    /// Already held or already played.
    Duplicate,
    /// Arrived after its playout time.
    Late,
    /// Too far ahead of the playout point: the buffer restarted at this packet.
    Resync,
}

/// What `pop` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popped {
    /// A received packet (sequence number).
    Played(u64),
    /// A concealment for a lost packet (sequence number).
    Concealed(u64),
}

/// Counters, for the status line and the heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets dropped.
    pub late: u64,
    /// Packets concealed.
    pub lost: u64,
    /// Times the buffer restarted.
    pub resyncs: u64,
    /// Packets' worth of concealment added to deepen the buffer (after late packets).
    pub stretched: u64,
    /// Lost packets restored from the copy the next datagram carried (redundancy).
    pub recovered: u64,
    /// Packets left out to drain depth the buffer held beyond its set point for good (after
    /// the playback device stalled, say).
    pub trimmed: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    seq: Option<u64>,
    /// The sequence number last played from this slot: a copy arriving later is a duplicate,
    /// not a late packet (its turn was not concealed).
    played: Option<u64>,
    arrival: Instant,
    /// The packet's bytes (PCM samples or a coded frame), preallocated to the largest.
    payload: Vec<u8>,
}

/// The jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    max_payload: usize,
    target: Duration,
    slots: Vec<Slot>,
    /// Next sequence number to play; `None` until the first packet.
    next: Option<u64>,
    started: bool,
    /// When the first packet since the last reset arrived: playout starts `target` later.
    first_arrival: Option<Instant>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for packets of at most `max_payload` bytes, holding `target` of delay. It does
    /// not look inside packets: the caller decodes what is played and conceals what is not.
    pub fn new(max_payload: usize, target: Duration, now: Instant) -> Self {
        Self {
            max_payload,
            target,
            slots: vec![
                Slot {
                    seq: None,
                    played: None,
                    arrival: now,
                    payload: Vec::with_capacity(max_payload),
                };
                CAPACITY
            ],
            next: None,
            started: false,
            first_arrival: None,
            stats: JitterStats::default(),
        }
    }

    /// The bytes of packet `seq` if it is held (for a codec's forward error correction, which
    /// recovers a lost packet from the one after it).
    pub fn peek(&self, seq: u64) -> Option<&[u8]> {
        let slot = &self.slots[(seq % CAPACITY as u64) as usize];
        (slot.seq == Some(seq)).then_some(slot.payload.as_slice())
    }

    /// Counts a packet's worth of concealment added to deepen the buffer.
    pub fn note_stretch(&mut self) {
        self.stats.stretched += 1;
    }

    /// Counts packets left out to drain excess depth.
    pub fn note_trim(&mut self, packets: u64) {
        self.stats.trimmed += packets;
    }

    /// The counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay a packet may wait for a missing one before it is concealed.
    pub fn target(&self) -> Duration {
        self.target
    }

    /// Changes that delay (the latency tuner's decision).
    pub fn set_target(&mut self, target: Duration) {
        self.target = target;
    }

    /// Packets held.
    pub fn depth(&self) -> usize {
        self.slots.iter().filter(|s| s.seq.is_some()).count()
    }

    /// The next sequence number to be played, once known.
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    fn reset(&mut self) {
        for s in &mut self.slots {
            s.seq = None;
        }
        self.next = None;
        self.started = false;
        self.first_arrival = None;
    }

    /// Stores packet `seq` (bytes beyond the largest packet are cut).
    pub fn push(&mut self, seq: u64, payload: &[u8], now: Instant) -> Pushed {
        let mut outcome = Pushed::Accepted;
        match self.next {
            Some(n) if self.started && seq < n => {
                if self.slots[(seq % CAPACITY as u64) as usize].played == Some(seq) {
                    self.stats.duplicates += 1;
                    return Pushed::Duplicate;
                }
                self.stats.late += 1;
                return Pushed::Late;
            }
            Some(n) if seq.saturating_sub(n) >= CAPACITY as u64 => {
                self.stats.resyncs += 1;
                self.reset();
                outcome = Pushed::Resync;
            }
            _ => {}
        }
        if !self.started {
            // Before playout the earliest packet seen sets the start; older slots are dropped.
            let start = self.next.map_or(seq, |n| n.min(seq));
            for s in &mut self.slots {
                if s.seq.is_some_and(|q| q >= start + CAPACITY as u64) {
                    s.seq = None;
                }
            }
            self.next = Some(start);
            self.first_arrival.get_or_insert(now);
        }
        let slot = &mut self.slots[(seq % CAPACITY as u64) as usize];
        if slot.seq == Some(seq) {
            self.stats.duplicates += 1;
            return Pushed::Duplicate;
        }
        slot.seq = Some(seq);
        slot.arrival = now;
        slot.payload.clear();
        slot.payload
            .extend_from_slice(&payload[..payload.len().min(self.max_payload)]);
        self.stats.received += 1;
        outcome
    }

    /// Stores the redundant copy of packet `seq` (carried by the datagram after it) if the
    /// packet itself has not arrived and its turn has not come. Returns true when it filled a
    /// hole.
    pub fn push_redundant(&mut self, seq: u64, payload: &[u8], now: Instant) -> bool {
        let Some(next) = self.next else { return false };
        if seq < next || seq.saturating_sub(next) >= CAPACITY as u64 {
            return false;
        }
        let idx = (seq % CAPACITY as u64) as usize;
        if self.slots[idx].seq == Some(seq) {
            return false;
        }
        if self.push(seq, payload, now) == Pushed::Accepted {
            self.stats.received -= 1;
            self.stats.recovered += 1;
            return true;
        }
        false
    }

    /// The next packet: its bytes in `out` when it is there ([`Popped::Played`]), or `out`
    /// empty when it is given up for lost ([`Popped::Concealed`]: the caller conceals).
    ///
    /// `must_play`: the device needs audio now, so a missing packet is given up at once.
    /// Returns `None` while waiting: before playout starts, or while a gap may still fill.
    pub fn pop(&mut self, now: Instant, must_play: bool, out: &mut Vec<u8>) -> Option<Popped> {
        let next = self.next?;
        if !self.started {
            let first = self.first_arrival?;
            if now.duration_since(first) < self.target {
                return None;
            }
            self.started = true;
        }
        out.clear();
        let idx = (next % CAPACITY as u64) as usize;
        if self.slots[idx].seq == Some(next) {
            let slot = &mut self.slots[idx];
            slot.seq = None;
            slot.played = Some(next);
            out.extend_from_slice(&slot.payload);
            self.next = Some(next + 1);
            return Some(Popped::Played(next));
        }
        let later_waited = self
            .slots
            .iter()
            .filter(|s| s.seq.is_some_and(|q| q > next))
            .any(|s| now.duration_since(s.arrival) >= self.target);
        if !must_play && !later_waited {
            return None;
        }
        self.slots[idx].played = None;
        self.stats.lost += 1;
        self.next = Some(next + 1);
        Some(Popped::Concealed(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn payload(seq: u64) -> Vec<u8> {
        (0..4)
            .flat_map(|i| ((seq * 10 + i) as i16).to_le_bytes())
            .collect()
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Popped> {
        let mut out = Vec::new();
        let mut got = Vec::new();
        while let Some(p) = jb.pop(now, false, &mut out) {
            match p {
                Popped::Played(seq) => assert_eq!(out, payload(seq)),
                Popped::Concealed(_) => assert!(out.is_empty()),
            }
            got.push(p);
        }
        got
    }

    #[test]
    fn waits_for_target_then_plays_in_order_despite_reordering() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, 10 * MS, t0);
        for (i, seq) in [3u64, 1, 2, 5, 4].into_iter().enumerate() {
            assert_eq!(
                jb.push(seq, &payload(seq), t0 + i as u32 * MS),
                Pushed::Accepted
            );
        }
        assert_eq!(
            jb.pop(t0 + 5 * MS, false, &mut Vec::new()),
            None,
            "target not reached"
        );
        let got = drain(&mut jb, t0 + 20 * MS);
        assert_eq!(got, (1..=5).map(Popped::Played).collect::<Vec<_>>());
    }

    #[test]
    fn drops_duplicates_and_late_packets() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, Duration::ZERO, t0);
        assert_eq!(jb.push(0, &payload(0), t0), Pushed::Accepted);
        assert_eq!(jb.push(0, &payload(0), t0), Pushed::Duplicate);
        assert_eq!(drain(&mut jb, t0), vec![Popped::Played(0)]);
        assert_eq!(
            jb.push(0, &payload(0), t0),
            Pushed::Duplicate,
            "a copy of a played packet"
        );
        assert_eq!(
            jb.pop(t0, true, &mut Vec::new()),
            Some(Popped::Concealed(1))
        );
        assert_eq!(
            jb.push(1, &payload(1), t0),
            Pushed::Late,
            "its turn was given up"
        );
        let s = jb.stats();
        assert_eq!((s.received, s.duplicates, s.late), (1, 2, 1));
    }

    #[test]
    fn gives_up_a_gap_once_later_packets_have_waited() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, 10 * MS, t0);
        jb.push(0, &payload(0), t0);
        jb.push(2, &payload(2), t0 + 5 * MS);
        assert_eq!(
            drain(&mut jb, t0 + 10 * MS),
            vec![Popped::Played(0)],
            "1 may still come"
        );
        assert_eq!(jb.peek(2), Some(&payload(2)[..]), "what FEC would read");
        let got = drain(&mut jb, t0 + 15 * MS);
        assert_eq!(got, vec![Popped::Concealed(1), Popped::Played(2)]);
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(jb.peek(2), None);
    }

    #[test]
    fn must_play_gives_up_at_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, Duration::ZERO, t0);
        jb.push(0, &payload(0), t0);
        let mut out = Vec::new();
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Played(0)));
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Concealed(1)));
        assert!(out.is_empty());
    }

    #[test]
    fn a_redundant_copy_fills_only_a_hole() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, 10 * MS, t0);
        jb.push(0, &payload(0), t0);
        assert!(!jb.push_redundant(0, &payload(0), t0), "already there");
        // 1 is lost; 2 carries it.
        jb.push(2, &payload(2), t0 + 10 * MS);
        assert!(jb.push_redundant(1, &payload(1), t0 + 10 * MS));
        let got = drain(&mut jb, t0 + 30 * MS);
        assert_eq!(got, (0..=2).map(Popped::Played).collect::<Vec<_>>());
        assert!(
            !jb.push_redundant(1, &payload(1), t0),
            "its turn has passed"
        );
        let s = jb.stats();
        assert_eq!((s.received, s.recovered, s.lost), (2, 1, 0));
    }

    #[test]
    fn a_short_packet_keeps_its_length_and_a_long_one_is_cut() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
        jb.push(0, &[1, 0], t0);
        jb.push(1, &[1, 2, 3, 4, 5, 6], t0);
        let mut out = Vec::new();
        assert_eq!(jb.pop(t0, false, &mut out), Some(Popped::Played(0)));
        assert_eq!(out, [1, 0]);
        jb.pop(t0, false, &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn far_future_packet_resyncs() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8, Duration::ZERO, t0);
        jb.push(0, &payload(0), t0);
        drain(&mut jb, t0);
        assert_eq!(jb.push(10_000, &payload(10_000), t0), Pushed::Resync);
        assert_eq!(drain(&mut jb, t0), vec![Popped::Played(10_000)]);
    }
}
