//! Keeping the depth at its set point beyond what drift correction does: deepening at once
//! after a late packet, leaving packets out when an excess has lasted, and telling drift
//! correction when the device stalled (what it then sees is not the clocks' drift).

use std::time::{Duration, Instant};

use super::PlayoutCore;
use crate::audio::jitter::Popped;

/// Depth above the set point (or a packet, if longer) that is drained by leaving packets out,
/// once it has lasted [`TRIM_AFTER`]; less is left to drift correction. Such depth is never
/// needed: the set point already covers the network's worst lateness. It comes from the
/// playback device stalling while packets kept arriving (each stall adds its length; through
/// a busy PipeWire graph, 170 ms was seen against a 31 ms target), or from a stream that now
/// comes earlier than before. Drift correction alone drains 5 ms a second: half a minute of
/// needless latency for 150 ms.
const TRIM_ABOVE: Duration = Duration::from_millis(20);
/// How long the excess must last: the least of it over this time is what is left out.
const TRIM_AFTER: Duration = Duration::from_millis(500);
/// A playback device that takes nothing for this long (or four of its periods, if longer) has
/// stalled: the depth it leaves off the target is not the clocks' drift.
const DEVICE_STALL: Duration = Duration::from_millis(30);

impl PlayoutCore {
    /// After a late packet: concealment owed up to the set point (`depth` in seconds, the
    /// concealment already owed counted). Returns the depth with it.
    pub(super) fn deepen_to(&mut self, depth: f64, setpoint: Duration) -> f64 {
        if !std::mem::take(&mut self.deepen) {
            return depth;
        }
        // Whole packets: concealment is played a packet at a time, and a remainder of less
        // than half a packet was never played, yet counted as depth for good (which also kept
        // any excess from being trimmed: `a_frozen_audio_server_leaves_no_excess_behind`).
        let short = ((setpoint.as_secs_f64() - depth) * self.sink_rate).max(0.0);
        let short = (short / self.step.max(1) as f64).round() as usize * self.step;
        self.pad += short;
        self.drift.moved_to_target();
        depth + short as f64 / self.sink_rate
    }

    /// The device took audio at `now`, a `period` (seconds) at a time: if that came long after
    /// the last time ([`DEVICE_STALL`]), it stalled, and drift correction is told.
    pub(super) fn device_took_audio(&mut self, now: Instant, period: f64) {
        let stall = DEVICE_STALL.as_secs_f64().max(4.0 * period);
        if let Some(before) = self.device_took.replace(now) {
            if now.saturating_duration_since(before).as_secs_f64() > stall {
                self.drift.disturbed(now);
            }
        }
    }

    /// Leaves packets out when the depth (seconds) has stood more than [`TRIM_ABOVE`] over the
    /// set point for [`TRIM_AFTER`]: as many whole packets as the least excess over that time
    /// holds. Returns the depth after.
    pub(super) fn trim_excess(&mut self, depth: f64, setpoint: Duration, now: Instant) -> f64 {
        let packet = self.step as f64 / self.sink_rate;
        let excess = depth - setpoint.as_secs_f64();
        // Not while the buffer is being deepened: that depth was asked for.
        if excess <= TRIM_ABOVE.as_secs_f64().max(packet) || self.pad > 0 {
            self.excess = None;
            return depth;
        }
        let (since, least) = self.excess.get_or_insert((now, excess));
        *least = least.min(excess);
        if now.saturating_duration_since(*since) < TRIM_AFTER {
            return depth;
        }
        let wanted = (*least / packet) as usize;
        self.excess = None;
        let left_out = self.leave_out(wanted, now);
        if left_out == 0 {
            return depth;
        }
        let by = left_out as f64 * packet;
        self.drift.shift(by, now);
        depth - by
    }

    /// Leaves out up to `wanted` packets from the head of the jitter buffer: only packets that
    /// are there, and only with the packet after them there too, which fades in from the first
    /// left out. The first is decoded for that fade, and the last so that the decoder's state
    /// (Opus carries band energies and filter memories from frame to frame) is the one the next
    /// packet follows; those between are not, so a long cut costs a device callback two decodes.
    /// Returns how many were left out.
    pub(super) fn leave_out(&mut self, wanted: usize, now: Instant) -> usize {
        let Some(next) = self.jb.next_seq() else {
            return 0;
        };
        let present = (0..=wanted as u64)
            .take_while(|i| self.jb.peek(next + i).is_some())
            .count();
        let n = present.saturating_sub(1);
        for i in 0..n {
            if !matches!(
                self.jb.pop(now, false, &mut self.packet),
                Some(Popped::Played(_))
            ) {
                // Unreachable: each was just seen held.
                return i;
            }
            if (i == 0 || i + 1 == n) && self.decoder.decode(&self.packet, &mut self.pcm).is_err() {
                self.decoder.conceal(None, &mut self.pcm);
            }
            if i == 0 {
                self.splice.clear();
                self.splice.extend_from_slice(&self.pcm);
            }
            self.jb.note_trim(1);
        }
        n
    }
}
