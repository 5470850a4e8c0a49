//! The client's playout, sans-IO: authenticated datagram bodies in, de-jittered, decoded,
//! concealed and converted audio out, pulled by the device.
//!
//! What runs where. A device's callback calls [`PlayoutCore::pull`] (through the engine's
//! [`crate::audio::Pull`]): it takes the arrivals the network thread handed over through a
//! lock-free ring, and then does the whole playout for the samples it needs: jitter buffer,
//! decoding (PCM or Opus), concealment, conversion and resampling trimmed for drift. It never
//! blocks, locks, logs or makes a system call, and its buffers are sized when the session
//! starts, so it does not allocate in its steady state. A file or the null sink has no
//! callback: the network thread calls the same `pull` at each arrival and on the stream's clock
//! (engine/playout.rs), and the playout then takes packets as they come in order, waits for
//! reordered ones and never trims, so a recording is exact.
//!
//! - `convert`: sample format, channels, rate; the crossfade over a cut.
//! - `cushion`: what the device takes at once, learned.
//! - `trim`: deepening after a late packet, leaving packets out of an excess, device stalls.
//! - `sim` (tests): the playout against a simulated device and network in simulated time.

mod convert;
mod cushion;
mod trim;

#[cfg(test)]
mod sim;

use std::time::{Duration, Instant};

use self::convert::{crossfade, trim_interpolation, Converter};
use self::cushion::BurstPeak;
use crate::audio::adapt::{DriftControl, LatencyTuner};
use crate::audio::codec::Decoder;
use crate::audio::jitter::{JitterBuffer, JitterStats, Popped, Pushed};
use crate::audio::{AudioError, StreamFormat};
use crate::protocol::datagram::split_redundant;
use crate::protocol::frame::{Codec, SessionParams};

/// `end_frames` when no end of stream has been announced.
pub const NO_END: u64 = u64::MAX;
/// How long a file recording waits for a reordered packet before concealing it.
const FILE_REORDER_WAIT: Duration = Duration::from_millis(200);
/// After an end of stream, a gap with no datagram this long is concealed rather than awaited.
const END_GRACE: Duration = Duration::from_millis(300);

/// What one [`PlayoutCore::pull`] gave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Frames of the stream at the head of `out` (the rest is silence: before playout started,
    /// past the end, or nothing at all to play).
    pub frames: usize,
    /// The announced end has been played.
    pub ended: bool,
}

/// The most a playout may hold when the network forces it to grow.
const MAX_TARGET: Duration = Duration::from_millis(250);

/// Live figures of one playout, for the status line and `--stats-json`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Audio buffered between the network and the speaker (smoothed).
    pub depth: Duration,
    /// What the tuner wants buffered.
    pub target: Duration,
    /// Interarrival jitter.
    pub jitter: Duration,
    /// The sender's clock against the device's, as corrected (positive: sender fast).
    pub drift_ppm: f64,
}

/// One session's playout, sans-IO: datagram bodies in (with their arrival time), audio out as
/// the device (or the pump standing in for one) pulls it. The engine drives it with real time
/// and a real socket; the tests in `sim` with simulated time and a simulated device.
pub struct PlayoutCore {
    ff: u64,
    ch: usize,
    clocked: bool,
    sink_rate: f64,
    /// One packet, in device frames.
    step: usize,
    jb: JitterBuffer,
    conv: Converter,
    tuner: LatencyTuner,
    drift: DriftControl,
    decoder: Decoder,
    /// The packet being played, as received.
    packet: Vec<u8>,
    pcm: Vec<i16>,
    /// Lost packets that Opus's forward error correction recovered.
    fec_recovered: u64,
    /// Concealment still to add to deepen the buffer after a late packet (device frames).
    pad: usize,
    /// Audio has been written: from here on the depth is measured and controlled.
    playing: bool,
    /// Datagrams carry the previous frame too: the bytes of one full frame.
    redundant_frame_bytes: Option<usize>,
    /// Packets are Opus-coded.
    opus: bool,
    figures: Figures,
    /// The most the device took between two services, held for a while (device frames).
    burst: BurstPeak,
    /// What the device keeps queued beyond the tuner's target (device frames).
    cushion: usize,
    /// The sink's channels.
    sink_ch: usize,
    /// Converted audio not yet pulled (interleaved, the sink's format), and how much
    /// of it has been.
    staged: Vec<f32>,
    staged_at: usize,
    /// When the last packet in sequence arrived (the depth is measured as of then).
    last_arrival: Option<Instant>,
    /// A packet came after its turn: the playout deepens to the set point at once (the glitch has
    /// happened; growing slowly would risk more of them).
    deepen: bool,
    /// Device frames to leave out before the first heard, so that playout starts
    /// at its set point exactly rather than up to a packet above it.
    skip: usize,
    /// The stream position just past the last audio decoded (or concealed) for the device.
    fed_end: Option<u64>,
    /// Since when the depth has stood more than [`TRIM_ABOVE`] over the set point, and the
    /// least it stood over it since (seconds).
    excess: Option<(Instant, f64)>,
    /// After packets were left out: the first of them, decoded, which the next packet played
    /// fades in from (it continues what was heard before the cut, so the cut makes no step).
    splice: Vec<i16>,
    /// When the device last took audio.
    device_took: Option<Instant>,
}

impl std::fmt::Debug for PlayoutCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayoutCore")
            .field("frame_frames", &self.ff)
            .field("clocked", &self.clocked)
            .field("playing", &self.playing)
            .field("figures", &self.figures)
            .finish_non_exhaustive()
    }
}

impl PlayoutCore {
    /// A playout of the stream `params` describes into audio of format `out`: for a device
    /// (`clocked`), at least `floor` deep and trimmed for drift; for a file, exact (it waits
    /// for reordered packets and never trims).
    ///
    /// # Errors
    /// [`AudioError`] when no decoder or resampler can be made for the formats.
    pub fn new(
        params: SessionParams,
        floor: Duration,
        out: StreamFormat,
        clocked: bool,
        now: Instant,
    ) -> Result<Self, AudioError> {
        let ff = u64::from(params.frame_frames);
        let ch = usize::from(params.channels);
        let stream = StreamFormat {
            sample_rate: params.sample_rate,
            channels: u16::from(params.channels),
        };
        let sink_rate = f64::from(out.sample_rate);
        let frame = Duration::from_secs_f64(ff as f64 / f64::from(params.sample_rate));
        // A file takes audio as it comes: latency costs nothing there, so it waits long for
        // reordered packets; a device waits what the tuner decides.
        let (floor, ceiling) = if clocked {
            (floor, MAX_TARGET.max(floor))
        } else {
            (FILE_REORDER_WAIT, FILE_REORDER_WAIT)
        };
        let tuner = LatencyTuner::new(frame, floor, ceiling);
        Ok(Self {
            ff,
            ch,
            clocked,
            sink_rate,
            step: (ff as f64 * sink_rate / f64::from(params.sample_rate)).round() as usize,
            jb: JitterBuffer::new(
                if params.codec == Codec::Opus {
                    crate::protocol::frame::MAX_AUDIO_BYTES
                } else {
                    params.frame_bytes()
                },
                tuner.target(),
                now,
            ),
            decoder: Decoder::new(&params)?,
            packet: Vec::with_capacity(crate::protocol::frame::MAX_AUDIO_BYTES),
            fec_recovered: 0,
            conv: Converter::new(
                stream,
                out,
                ff as usize,
                clocked.then(|| trim_interpolation(floor, params.sample_rate, sink_rate)),
            )?,
            tuner,
            drift: DriftControl::new(),
            pcm: Vec::with_capacity(ff as usize * ch),
            pad: 0,
            playing: false,
            redundant_frame_bytes: (params.codec == Codec::PcmS16Redundant)
                .then(|| params.frame_bytes()),
            opus: params.codec == Codec::Opus,
            figures: Figures {
                target: floor,
                ..Figures::default()
            },
            // The callback's size is learned, from nothing.
            burst: BurstPeak::new(0, sink_rate),
            cushion: 0,
            sink_ch: usize::from(out.channels.max(1)),
            staged: Vec::with_capacity(4 * (ff as usize + 64) * usize::from(out.channels.max(1))),
            staged_at: 0,
            last_arrival: None,
            skip: 0,
            fed_end: None,
            deepen: false,
            excess: None,
            splice: Vec::with_capacity(ff as usize * ch),
            device_took: None,
        })
    }

    /// The jitter buffer's counters (with Opus FEC recoveries counted as recovered, not lost).
    pub fn stats(&self) -> JitterStats {
        let mut s = self.jb.stats();
        s.recovered += self.fec_recovered;
        s.lost -= self.fec_recovered.min(s.lost);
        s
    }

    /// The live figures.
    pub fn figures(&self) -> Figures {
        self.figures
    }

    /// What the device keeps queued beyond the tuner's target (device frames).
    pub fn cushion(&self) -> usize {
        self.cushion
    }

    /// Once playing: the stream position of the next frame to leave for the device, with
    /// `queued` device frames converted and waiting ahead of it (staged for the
    /// callback). What has been decoded, less what the resampler and that queue still hold; a
    /// frame of padding in the queue counts as the stream's, so that the position at the
    /// queue's head, extrapolated at the stream's rate, meets each real frame when it plays.
    pub fn next_out_position(&self, queued: usize) -> Option<u64> {
        let out_to_stream = self.ff as f64 / self.step.max(1) as f64;
        let queued_stream = (queued + self.conv.delay_frames()) as f64 * out_to_stream;
        let held = self.conv.pending_frames() as f64 + queued_stream;
        self.fed_end
            .filter(|_| self.playing)
            .map(|end| end.saturating_sub(held.round() as u64))
    }

    /// Converted frames staged for the next callbacks.
    pub fn staged_frames(&self) -> usize {
        (self.staged.len() - self.staged_at) / self.sink_ch.max(1)
    }

    /// Packets held in the jitter buffer.
    pub fn held(&self) -> usize {
        self.jb.depth()
    }

    /// The next sequence number to play, once known.
    pub fn next_seq(&self) -> Option<u64> {
        self.jb.next_seq()
    }

    /// An audio datagram's body arrived. Returns false for a malformed position.
    pub fn on_audio(&mut self, position: u64, samples: &[u8], now: Instant) -> bool {
        if !position.is_multiple_of(self.ff) {
            return false;
        }
        // PCM is whole 16-bit samples; an Opus packet is any length but empty.
        let pcm = self.redundant_frame_bytes.is_some() || !self.opus;
        if (pcm && !samples.len().is_multiple_of(2)) || samples.is_empty() {
            return false;
        }
        let seq = position / self.ff;
        let (previous, samples) = match self.redundant_frame_bytes {
            Some(full) => split_redundant(samples, full),
            None => (None, samples),
        };
        let before = self.tuner.target();
        let pushed = self.jb.push(seq, samples, now);
        match pushed {
            Pushed::Late => {
                // Its turn was concealed: the buffer is too shallow for this network. Grow now,
                // by concealment at once (the glitch already happened) rather than slowly.
                self.tuner.on_arrival(seq, now);
                self.tuner.on_late();
            }
            Pushed::Resync => {
                self.tuner.reset();
                self.tuner.on_arrival(seq, now);
                return true;
            }
            Pushed::Accepted | Pushed::Duplicate => {
                self.tuner.on_arrival(seq, now);
                if pushed == Pushed::Accepted {
                    self.last_arrival = Some(now);
                }
            }
        }
        if let (Some(prev), Some(before_seq)) = (previous, seq.checked_sub(1)) {
            // The copy only counts if the original was lost; its timing says nothing about the
            // network (it rides a frame late by design).
            self.jb.push_redundant(before_seq, prev, now);
        }
        let after = self.tuner.target();
        if after > before {
            self.jb.set_target(after);
        }
        if self.clocked && pushed == Pushed::Late {
            // Deepen to the set point at the next pull, whether the target grew or not:
            // at the tuner's ceiling it cannot, and a stream that now comes later than the
            // buffer holds (a sender that lost capture time) would have every packet late
            // until drift correction crept back at 0.5 %: 350 ms lost at the ceiling cost 20 s
            // of concealment (`a_stream_that_comes_back_later_than_the_buffer_holds_...`).
            self.deepen = true;
        }
        true
    }

    /// The worst lateness the latency tuner has seen lately.
    pub fn worst_lateness(&self) -> Duration {
        self.tuner.worst_lateness()
    }

    /// Audio buffered after the network: `queued` frames staged for the device, the jitter
    /// buffer's packets, what waits in the resampler and concealment owed, in seconds.
    fn depth(&self, queued: usize) -> f64 {
        let frames = queued + self.jb.depth() * self.step + self.conv.pending_frames() + self.pad;
        frames as f64 / self.sink_rate
    }

    /// One step of drift correction: the resampler's ratio from the measured `depth` (seconds)
    /// against the set point, and the live figures that go with it.
    fn follow_drift(&mut self, depth: f64, setpoint: Duration, now: Instant) {
        let corr = self
            .drift
            .update(Duration::from_secs_f64(depth), setpoint, now);
        self.conv.set_correction(corr);
        self.figures = Figures {
            depth: self.drift.smoothed_depth().unwrap_or_default(),
            target: setpoint,
            jitter: self.tuner.jitter(),
            drift_ppm: self.drift.drift_ppm(),
        };
    }

    /// Decodes what the jitter buffer gave up (or conceals it) into `pcm`. Returns the samples
    /// to play, cut at the announced end, and whether they are the stream's last; `None` when
    /// the packet lies past the end.
    fn decode(&mut self, p: Popped, end_frames: u64) -> Option<(usize, bool)> {
        let seq = match p {
            Popped::Played(s) => {
                if self.decoder.decode(&self.packet, &mut self.pcm).is_err() {
                    self.decoder.conceal(None, &mut self.pcm);
                }
                crossfade(&mut self.splice, &mut self.pcm, self.ch);
                s
            }
            Popped::Concealed(s) => {
                if self.decoder.conceal(self.jb.peek(s + 1), &mut self.pcm) {
                    self.fec_recovered += 1;
                }
                self.splice.clear();
                s
            }
        };
        let start = seq * self.ff;
        if start >= end_frames {
            return None;
        }
        let frames = (end_frames - start).min(self.ff) as usize;
        self.fed_end = Some(start + frames as u64);
        Some((
            (frames * self.ch).min(self.pcm.len()),
            start + self.ff >= end_frames,
        ))
    }

    /// Fills `out` (interleaved, the sink's format) with what plays next, at `now`, with the
    /// stream's end at `end_frames` ([`NO_END`] if none announced).
    ///
    /// A device (`clocked`) calls this from its callback: the jitter buffer is the only queue,
    /// playout starts at the set point, and a packet missing when its turn comes is concealed
    /// at once; `out` is silence before playout starts and after the end. A file or the null
    /// sink is pulled by a pump: it gets what is ready in order at once, and a missing packet
    /// is waited for (200 ms) unless the stream has ended and nothing has come for 300 ms.
    ///
    /// # Errors
    /// [`AudioError`] if converting the audio failed (`out` is then partly filled).
    pub fn pull(
        &mut self,
        now: Instant,
        end_frames: u64,
        out: &mut [f32],
    ) -> Result<Pulled, AudioError> {
        self.tuner.tick(now);
        if !self.clocked {
            self.figures.jitter = self.tuner.jitter();
            self.figures.target = self.tuner.target();
            let quiet = self
                .last_arrival
                .is_none_or(|t| now.saturating_duration_since(t) > END_GRACE);
            return self.fill(now, end_frames, out, end_frames != NO_END && quiet);
        }
        let ch = self.sink_ch;
        // The tuner's target is the depth just after a packet arrives: enough for the worst
        // lateness and for the wait until the next packet. A callback takes its whole period
        // at once, so that much more is held: the largest callback seen lately.
        self.burst.observe(out.len() / ch, now);
        self.cushion = self.burst.frames;
        if self.playing {
            self.device_took_audio(now, (out.len() / ch) as f64 / self.sink_rate);
        }
        let setpoint =
            self.tuner.target() + Duration::from_secs_f64(self.cushion as f64 / self.sink_rate);
        // The depth as of the last arrival: what is buffered now plus what has played since (at
        // most a packet's worth, should the next one be late). Measured at the callback alone,
        // it would depend on where callbacks fall between arrivals, and jump by a packet
        // whenever drift slides one past the other.
        let since = self
            .last_arrival
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
            * self.sink_rate;
        let staged = (self.staged.len() - self.staged_at) / ch;
        let depth = self.depth(staged) + since.min(self.step as f64) / self.sink_rate;
        if self.playing {
            let depth = self.deepen_to(depth, setpoint);
            let depth = self.trim_excess(depth, setpoint, now);
            self.follow_drift(depth, setpoint, now);
        } else {
            self.figures.jitter = self.tuner.jitter();
            self.figures.target = setpoint;
            // Once the end is announced, everything has been sent: nothing more to wait for.
            let waiting = end_frames == NO_END && depth < setpoint.as_secs_f64();
            if self.jb.next_seq().is_none() || waiting {
                out.fill(0.0);
                return Ok(Pulled::default());
            }
            // Start at the set point, leaving out what came beyond it.
            self.skip = ((depth - setpoint.as_secs_f64()).max(0.0) * self.sink_rate) as usize;
        }
        // This decides when playout starts; the jitter buffer waits no longer itself.
        self.jb.set_target(Duration::ZERO);
        self.fill(now, end_frames, out, self.playing)
    }

    /// Fills `out` from what is staged, then from the jitter buffer (`must`: a missing packet
    /// is concealed rather than awaited), up to the end; the rest of `out` is silence.
    fn fill(
        &mut self,
        now: Instant,
        end_frames: u64,
        out: &mut [f32],
        must: bool,
    ) -> Result<Pulled, AudioError> {
        let ch = self.sink_ch;
        let mut filled = 0;
        let mut ended = false;
        while filled < out.len() {
            let left = self.staged.len() - self.staged_at;
            if left > 0 {
                let n = left.min(out.len() - filled);
                out[filled..filled + n]
                    .copy_from_slice(&self.staged[self.staged_at..self.staged_at + n]);
                self.staged_at += n;
                filled += n;
                continue;
            }
            self.staged.clear();
            self.staged_at = 0;
            if ended {
                break;
            }
            let samples = if self.pad >= self.step / 2 && self.pad > 0 {
                // Deepening after a late packet: a packet's worth of concealment.
                self.decoder.conceal(None, &mut self.pcm);
                self.splice.clear();
                self.jb.note_stretch();
                self.pad = self.pad.saturating_sub(self.step);
                self.pcm.len() / self.ch * self.ch
            } else {
                // The stream ended with what was played already (the end came after it).
                if self
                    .jb
                    .next_seq()
                    .is_some_and(|n| n * self.ff >= end_frames)
                {
                    ended = true;
                    continue;
                }
                let Some(p) = self.jb.pop(now, must, &mut self.packet) else {
                    break;
                };
                match self.decode(p, end_frames) {
                    None => {
                        ended = true;
                        continue;
                    }
                    Some((samples, last)) => {
                        ended = last;
                        samples
                    }
                }
            };
            let converted = self.conv.convert(&self.pcm[..samples])?;
            self.staged.extend_from_slice(converted);
            if ended {
                // The resampler holds the stream's last few frames until more input comes: a
                // packet of silence brings them out, and only they are kept (a file ends
                // where the stream does).
                let ratio = self.step as f64 / self.ff.max(1) as f64;
                let tail = (self.conv.pending_frames() as f64 * ratio).round() as usize
                    + self.conv.delay_frames();
                if tail > 0 {
                    self.pcm.fill(0);
                    let converted = self.conv.convert(&self.pcm)?;
                    let keep = (tail * ch).min(converted.len());
                    self.staged.extend_from_slice(&converted[..keep]);
                }
            }
            let skipped = (self.skip * ch).min(self.staged.len());
            self.staged_at = skipped;
            self.skip -= skipped / ch;
            self.playing = true;
        }
        out[filled..].fill(0.0);
        Ok(Pulled {
            frames: filled / ch,
            // The end counts once the last of it has gone out, not merely been staged.
            ended: ended && self.staged_at >= self.staged.len(),
        })
    }
}
