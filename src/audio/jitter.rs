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
}

#[derive(Debug, Clone)]
struct Slot {
    seq: Option<u64>,
    /// The sequence number last played from this slot: a copy arriving later is a duplicate,
    /// not a late packet (its turn was not concealed).
    played: Option<u64>,
    arrival: Instant,
    /// Samples received; a stream's last packet may be shorter than the rest.
    len: usize,
    samples: Vec<i16>,
}

/// The jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    frame_samples: usize,
    target: Duration,
    slots: Vec<Slot>,
    /// Next sequence number to play; `None` until the first packet.
    next: Option<u64>,
    started: bool,
    /// When the first packet since the last reset arrived: playout starts `target` later.
    first_arrival: Option<Instant>,
    last: Vec<i16>,
    concealed_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for packets of `frame_samples` interleaved samples, holding `target` of delay.
    pub fn new(frame_samples: usize, target: Duration, now: Instant) -> Self {
        Self {
            frame_samples,
            target,
            slots: vec![
                Slot {
                    seq: None,
                    played: None,
                    arrival: now,
                    len: frame_samples,
                    samples: vec![0; frame_samples]
                };
                CAPACITY
            ],
            next: None,
            started: false,
            first_arrival: None,
            last: vec![0; frame_samples],
            concealed_run: 0,
            stats: JitterStats::default(),
        }
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

    /// Stores packet `seq` with its s16le `payload` (a shorter payload, the stream's last, is
    /// played at its own length).
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
        let n = payload.len().min(self.frame_samples * 2) / 2;
        for (dst, b) in slot.samples.iter_mut().zip(payload.chunks_exact(2)) {
            *dst = i16::from_le_bytes([b[0], b[1]]);
        }
        slot.samples[n..].fill(0);
        slot.len = n;
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

    /// Writes the next packet's samples into `out` (resized to one packet), or a concealment.
    ///
    /// `must_play`: the device needs audio now, so a missing packet is concealed at once.
    /// Returns `None` while waiting: before playout starts, or while a gap may still fill.
    pub fn pop(&mut self, now: Instant, must_play: bool, out: &mut Vec<i16>) -> Option<Popped> {
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
            out.extend_from_slice(&slot.samples[..slot.len]);
            self.last.copy_from_slice(&slot.samples);
            if self.concealed_run > 0 {
                // Back from a concealment (which faded to silence): fade in over the first
                // quarter of the packet (1.25 ms at 5 ms packets), enough for no step.
                let n = (out.len() / 4).max(1);
                for (i, s) in out.iter_mut().take(n).enumerate() {
                    *s = (f32::from(*s) * (i as f32 / n as f32)) as i16;
                }
            }
            self.concealed_run = 0;
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
        self.conceal(out);
        self.stats.lost += 1;
        self.next = Some(next + 1);
        Some(Popped::Concealed(next))
    }

    /// Writes one packet of concealment without consuming a sequence number: the buffer gets one
    /// packet deeper. Used right after a late packet, when the playout depth must grow at once.
    pub fn stretch(&mut self, out: &mut Vec<i16>) {
        out.clear();
        self.conceal(out);
        self.stats.stretched += 1;
    }

    /// Repeat the last packet fading to silence over one packet, then silence: no click, no buzz.
    fn conceal(&mut self, out: &mut Vec<i16>) {
        let n = self.last.len().max(1) as f32;
        if self.concealed_run == 0 {
            out.extend(
                self.last
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (f32::from(s) * (1.0 - i as f32 / n)) as i16),
            );
        } else {
            out.resize(self.frame_samples, 0);
        }
        self.concealed_run += 1;
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
            // A packet right after a concealment is faded in; the rest are as sent.
            let after_gap = matches!(got.last(), Some(Popped::Concealed(_)));
            if let (Popped::Played(seq), false) = (p, after_gap) {
                assert_eq!(
                    out,
                    (0..4).map(|i| (seq * 10 + i) as i16).collect::<Vec<_>>()
                );
            }
            got.push(p);
        }
        got
    }

    #[test]
    fn waits_for_target_then_plays_in_order_despite_reordering() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, 10 * MS, t0);
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
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
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
            "its turn was concealed"
        );
        let s = jb.stats();
        assert_eq!((s.received, s.duplicates, s.late), (1, 2, 1));
    }

    #[test]
    fn conceals_a_gap_once_later_packets_have_waited() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, 10 * MS, t0);
        jb.push(0, &payload(0), t0);
        jb.push(2, &payload(2), t0 + 5 * MS);
        assert_eq!(
            drain(&mut jb, t0 + 10 * MS),
            vec![Popped::Played(0)],
            "1 may still come"
        );
        let got = drain(&mut jb, t0 + 15 * MS);
        assert_eq!(got, vec![Popped::Concealed(1), Popped::Played(2)]);
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn must_play_conceals_at_once_with_a_fade() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
        jb.push(0, &[0x00, 0x40, 0x00, 0x40, 0x00, 0x40, 0x00, 0x40], t0);
        let mut out = Vec::new();
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Played(0)));
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Concealed(1)));
        assert_eq!(
            out,
            [16384, 12288, 8192, 4096],
            "fades out, no step to silence"
        );
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Concealed(2)));
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn audio_fades_back_in_after_a_concealment() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
        let loud = [0x00, 0x40, 0x00, 0x40, 0x00, 0x40, 0x00, 0x40];
        jb.push(0, &loud, t0);
        let mut out = Vec::new();
        jb.pop(t0, true, &mut out);
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Concealed(1)));
        jb.stretch(&mut out);
        assert_eq!(out, [0; 4], "a second concealment in a row is silence");
        jb.push(2, &loud, t0);
        assert_eq!(jb.pop(t0, true, &mut out), Some(Popped::Played(2)));
        assert_eq!(out, [0, 16384, 16384, 16384], "fades in from the silence");
        jb.push(3, &loud, t0);
        jb.pop(t0, true, &mut out);
        assert_eq!(out, [16384; 4], "then plays as received");
        assert_eq!((jb.stats().lost, jb.stats().stretched), (1, 1));
    }

    #[test]
    fn a_redundant_copy_fills_only_a_hole() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, 10 * MS, t0);
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
    fn a_short_last_packet_keeps_its_length() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
        jb.push(0, &[1, 0, 2, 0], t0);
        let mut out = Vec::new();
        assert_eq!(jb.pop(t0, false, &mut out), Some(Popped::Played(0)));
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn far_future_packet_resyncs() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(4, Duration::ZERO, t0);
        jb.push(0, &payload(0), t0);
        drain(&mut jb, t0);
        assert_eq!(jb.push(10_000, &payload(10_000), t0), Pushed::Resync);
        assert_eq!(drain(&mut jb, t0), vec![Popped::Played(10_000)]);
    }
}
