//! The server's media thread: owns the UDP socket and the capture, learns each client's UDP
//! address from its authenticated hello, and fans every captured frame out to the clients whose
//! address is proven. It never sends to any other address.
//!
//! A device is open only while somebody listens: the capture starts when the first client's
//! address is proven, and a device (not a file, whose position is the stream's) is let go once
//! no client has listened for [`RELEASE_AFTER`], so a microphone's in-use indicator goes out and
//! its callbacks stop costing CPU; it is opened again, in the same format, for the next client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{sock, Codec, EngineError, Shared};
use crate::audio::codec::OpusEncoder;
use crate::audio::stamp::shift;
use crate::audio::{AudioError, Capture, Frame, Source, StreamFormat};
use crate::engine::supervise::Supervisor;
use crate::protocol::datagram::{
    write_audio_body, write_redundant_body, Header, Kind, Opener, Sealer, MAX_DATAGRAM,
};
use crate::protocol::frame::SessionParams;
use crate::protocol::keys::SessionKeys;
use crate::store::bans::canonical;

/// Sentinel in `Shared::end_position`: the stream has not ended.
pub(crate) const NOT_ENDED: u64 = u64::MAX;

/// Sessions come and go through these.
pub(crate) enum MediaCommand {
    /// An authenticated session; `ready` is told once its hello arrives.
    Add {
        params: SessionParams,
        ip: IpAddr,
        keys: Box<SessionKeys>,
        ready: Sender<()>,
    },
    /// The session ended.
    Remove { session_id: u32 },
}

struct Session {
    ip: IpAddr,
    sealer: Sealer,
    opener: Opener,
    addr: Option<SocketAddr>,
    ready: Option<Sender<()>>,
}

/// Opens the source again, in the format given (the one the sessions were told of).
pub(crate) type Reopen = Box<dyn FnMut(StreamFormat) -> Result<Box<dyn Source>, AudioError> + Send>;

pub(crate) fn run(
    udp: UdpSocket,
    (source, mut reopen): (Box<dyn Source>, Option<Reopen>),
    frame_frames: usize,
    commands: Receiver<MediaCommand>,
    shared: Arc<Shared>,
) -> Result<(), EngineError> {
    // However this thread ends (an error, a panic), the engine hears of it at once.
    let _ended = Ended(&shared);
    let format = source.format();
    let ch = usize::from(format.channels);
    let frame_samples = frame_frames * ch;
    let mut source = Some(source);
    let mut capture: Option<Capture> = None;
    let mut sessions: HashMap<u32, Session> = HashMap::new();
    let mut position: u64 = 0;
    let mut frame = vec![0i16; frame_samples];
    // With redundancy, the frame sent last rides along with the next one.
    let redundancy = shared.capture.codec == Codec::PcmRedundant;
    let mut previous: Option<Vec<i16>> = None;
    let mut opus = match shared.capture.codec {
        Codec::Opus { kbps, fec } => Some(OpusEncoder::new(
            format.sample_rate,
            format.channels,
            kbps,
            fec,
            frame_frames,
        )?),
        Codec::Pcm | Codec::PcmRedundant => None,
    };
    // Opus delays the sound by its look-ahead: the client hears at position P what was
    // captured at P minus that.
    let lookahead = match opus.as_mut() {
        Some(enc) => i64::try_from(enc.lookahead_frames()?).unwrap_or(0),
        None => 0,
    };
    let mut body = Vec::with_capacity(MAX_DATAGRAM);
    let mut out = [0u8; MAX_DATAGRAM];
    let mut rx = [0u8; 2048];
    sock::prepare_for_polling(&udp).map_err(EngineError::io("UDP socket"))?;
    let mut last_audio = Instant::now();
    // Whether the capture has delivered since the run began: a device that never did is the
    // wrong one, and the run ends; one that stops after it did has failed, and is looked for
    // again.
    let mut heard = false;
    // The capture running is silence standing in for a lost device.
    let mut stand_in = false;
    let mut device = Supervisor::new(
        false,
        source.as_ref().map(|s| s.describe()).unwrap_or_default(),
        shared.counters.device.clone(),
        Some(shared.events.clone()),
    );
    const STAYS: &str = "the clients stay connected, hearing silence,";
    // Since when a running capture has had nobody to send to.
    let mut unheard_since: Option<Instant> = None;

    while !shared.stop.load(Ordering::Relaxed) {
        apply_commands(&commands, &mut sessions);

        // A device whose stream failed, or that fell silent after it had delivered, is closed
        // and opened again when it returns; the sessions stay.
        let fault = capture.as_ref().and_then(|c| {
            c.fault().or_else(|| {
                (!stand_in && heard && last_audio.elapsed() > SILENT_DEVICE)
                    .then(|| format!("it delivered no audio for {} s", SILENT_DEVICE.as_secs()))
            })
        });
        if let (Some(why), true) = (fault, reopen.is_some()) {
            // Silence stands in, on the stream's clock: the clients play it rather than count
            // and conceal losses for as long as the device is away. A device that fell silent
            // took the stream's clock with it: the positions it did not deliver are skipped,
            // so the silence keeps time with the wall clock and the clients start afresh at
            // it, rather than take every packet from now on as late (and grow their buffers).
            position += frames_missed(last_audio.elapsed(), frame_frames, format.sample_rate);
            capture = Some(silence(format));
            stand_in = true;
            device.failed(&why, STAYS, Instant::now());
        }

        // Send every frame that is due; then wait for datagrams until the next one is. With no
        // capture running there is nothing due: a hello (or the engine's wake-up at shutdown)
        // ends the wait.
        let mut wait = if capture.is_some() {
            IDLE_WAIT
        } else {
            NOBODY_WAIT
        };
        if let Some(cap) = capture.as_mut() {
            loop {
                match cap.next_frame(Instant::now(), &mut frame) {
                    Frame::Full => {
                        last_audio = Instant::now();
                        heard = true;
                        if shared.capture.mute.is_on() {
                            frame.fill(0);
                        }
                        if let Some(d) = cap.device_delay.get() {
                            shared.counters.device_delay.set(d);
                        }
                        if let Some(at) = cap
                            .captured_at()
                            .and_then(|t| shift(t, -lookahead, format.sample_rate))
                        {
                            shared.set_anchor(position, at);
                        }
                        send_frame(
                            &udp,
                            &mut sessions,
                            position,
                            (&frame, previous.as_deref()),
                            opus.as_mut(),
                            (&mut body, &mut out),
                            &shared,
                        );
                        if redundancy {
                            previous.get_or_insert_with(Vec::new).clone_from(&frame);
                        }
                        position += frame_frames as u64;
                    }
                    Frame::Last(n) => {
                        if shared.capture.mute.is_on() {
                            frame.fill(0);
                        }
                        // The last, partial frame goes out at its own length.
                        if n > 0 {
                            // Opus codes whole frames: the tail is padded with silence (the
                            // end position tells the client where the stream really ends).
                            let last = if opus.is_some() {
                                frame[n..].fill(0);
                                &frame[..]
                            } else {
                                &frame[..n]
                            };
                            send_frame(
                                &udp,
                                &mut sessions,
                                position,
                                (last, previous.as_deref()),
                                opus.as_mut(),
                                (&mut body, &mut out),
                                &shared,
                            );
                        }
                        let end = position + (n / ch) as u64;
                        tracing::info!("end of stream at frame {end}");
                        shared.end_position.store(end, Ordering::Release);
                        // The sessions say goodbye with the end position; the engine ends the
                        // stream once they are gone (at once if none is left).
                        shared.ring_sessions();
                        shared.ring_engine();
                        break;
                    }
                    Frame::Wait(d) => {
                        wait = d.min(IDLE_WAIT);
                        if !heard && last_audio.elapsed() > SILENT_DEVICE {
                            return Err(EngineError::Media(format!(
                                "the capture device delivered no audio for {} s (is it connected, and is it the right one?)",
                                SILENT_DEVICE.as_secs()
                            )));
                        }
                        break;
                    }
                    Frame::Ended => break,
                }
            }
        }
        if let Some(next) = device.next_attempt() {
            wait = wait.min(next.saturating_duration_since(Instant::now()));
        }
        device.tick(Instant::now());
        // A device that signals its deliveries wakes us the moment a frame may be complete.
        let wake = capture.as_ref().and_then(Capture::wake);
        match sock::recv_within_or_wake(&udp, wake, &mut rx, wait) {
            Ok(Some(_)) if shared.stop.load(Ordering::Relaxed) => break,
            Ok(Some((n, from))) => {
                // A session registered while we waited may be the one this hello is for.
                apply_commands(&commands, &mut sessions);
                handle_datagram(&mut sessions, &mut rx[..n], from, &shared)
            }
            Ok(None) => {}
            // ICMP errors from earlier sends surface here on some systems; they are not fatal.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }

        let listened = sessions.values().any(|s| s.addr.is_some());
        if (capture.is_none() || stand_in) && listened {
            // The first opening for a new listener, or the next attempt after a loss.
            let due = !device.away() || device.due(Instant::now());
            if source.is_none() && due {
                if let Some(open) = reopen.as_mut() {
                    match reopened(open, format) {
                        Ok(src) => source = Some(src),
                        Err(e) => device.open_failed(&e.to_string(), STAYS, Instant::now()),
                    }
                }
            }
            if let Some(src) = source.take() {
                let describe = src.describe();
                match src.start() {
                    Ok(c) => {
                        capture = Some(c);
                        last_audio = Instant::now();
                        if !device.away() {
                            tracing::info!("capture started: {describe}");
                        }
                        stand_in = false;
                        device.opened(describe, Instant::now());
                    }
                    // A device that went between its opening and its start is looked for again.
                    Err(e) if reopen.is_some() => {
                        device.open_failed(&e.to_string(), STAYS, Instant::now());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        } else if capture.is_some() && !listened && reopen.is_some() {
            let since = *unheard_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RELEASE_AFTER {
                capture = None;
                stand_in = false;
                device.released();
                previous = None;
                tracing::info!(
                    "capture released: no client for {} s",
                    RELEASE_AFTER.as_secs()
                );
            }
            continue;
        }
        unheard_since = None;
    }
    Ok(())
}

/// Whole frames of `frame_frames` a device that last delivered `since` ago should have
/// delivered meanwhile, after the one it delivered then.
fn frames_missed(since: Duration, frame_frames: usize, rate: u32) -> u64 {
    let frame_us = (frame_frames as u64 * 1_000_000 / u64::from(rate.max(1))).max(1);
    let missed = u64::try_from(since.as_micros()).unwrap_or(u64::MAX) / frame_us;
    missed.saturating_mul(frame_frames as u64)
}

/// Silence at `format`, on the real-time clock.
fn silence(format: StreamFormat) -> Capture {
    Capture::paced(
        format,
        Box::new(|buf: &mut [i16]| {
            buf.fill(0);
            buf.len()
        }),
    )
}

/// Marks the media thread ended and wakes the engine when dropped.
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.media_ended.store(true, Ordering::Release);
        self.0.ring_engine();
    }
}

/// How long a capture device stays open with nobody listening: long enough for a client that
/// lost its connection to come back (its retries start at 0.5 s) without the device reopening.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(5);

/// The source opened again for a new listener; it must deliver the format already announced.
fn reopened(open: &mut Reopen, format: StreamFormat) -> Result<Box<dyn Source>, EngineError> {
    let src = open(format)?;
    if src.format() != format {
        return Err(EngineError::Media(format!(
            "the capture device, opened again, delivers {} Hz {} ch instead of the {} Hz {} ch this server announces",
            src.format().sample_rate,
            src.format().channels,
            format.sample_rate,
            format.channels
        )));
    }
    Ok(src)
}

/// A capture that delivers nothing this long has failed (a running device always delivers,
/// silence included).
const SILENT_DEVICE: Duration = Duration::from_secs(2);
/// How long the media thread waits for datagrams, at most, while a capture runs.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How long it waits with no capture running (a safety net: the engine wakes it at shutdown).
const NOBODY_WAIT: Duration = Duration::from_secs(1);

fn apply_commands(commands: &Receiver<MediaCommand>, sessions: &mut HashMap<u32, Session>) {
    while let Ok(cmd) = commands.try_recv() {
        match cmd {
            MediaCommand::Add {
                params,
                ip,
                keys,
                ready,
            } => {
                let session = Session {
                    ip,
                    sealer: Sealer::new(params.mode, params.session_id, &keys.server_to_client),
                    opener: Opener::new(params.mode, params.session_id, &keys.client_to_server),
                    addr: None,
                    ready: Some(ready),
                };
                sessions.insert(params.session_id, session);
            }
            MediaCommand::Remove { session_id } => {
                sessions.remove(&session_id);
            }
        }
    }
}

fn handle_datagram(
    sessions: &mut HashMap<u32, Session>,
    dg: &mut [u8],
    from: SocketAddr,
    shared: &Shared,
) {
    let drop = || {
        shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    };
    // Cheap checks first: header, kind, a known session, the address its TCP connection came from.
    let Ok(header) = Header::parse(dg) else {
        return drop();
    };
    if header.kind != Kind::Hello {
        return drop();
    }
    let Some(session) = sessions.get_mut(&header.session_id) else {
        return drop();
    };
    if canonical(from.ip()) != session.ip {
        return drop();
    }
    match session.opener.open(dg) {
        Ok((Kind::Hello, _)) => {
            if session.addr != Some(from) {
                tracing::debug!("session {:08x}: audio goes to {from}", header.session_id);
                session.addr = Some(from);
            }
            if let Some(ready) = session.ready.take() {
                let _ = ready.send(());
                shared.ring_session(header.session_id);
            }
        }
        _ => drop(),
    }
}

/// Sends `frame` (Opus-coded, or as PCM with, for redundancy, the previous one) to every ready
/// session. The body is built once and sealed per session.
fn send_frame(
    udp: &UdpSocket,
    sessions: &mut HashMap<u32, Session>,
    position: u64,
    (frame, previous): (&[i16], Option<&[i16]>),
    opus: Option<&mut OpusEncoder>,
    (body, out): (&mut Vec<u8>, &mut [u8]),
    shared: &Shared,
) {
    if let Some(enc) = opus {
        match enc.encode(frame) {
            Ok(packet) => {
                body.clear();
                body.extend_from_slice(&position.to_be_bytes());
                body.extend_from_slice(packet);
            }
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        }
    } else if shared.capture.codec == Codec::PcmRedundant {
        write_redundant_body(position, previous, frame, body);
    } else {
        write_audio_body(position, frame, body);
    }
    for s in sessions.values_mut() {
        let Some(addr) = s.addr else { continue };
        let n = s.sealer.seal(Kind::Audio, body, out);
        match udp.send_to(&out[..n], addr) {
            Ok(_) => {
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                shared.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("UDP send to {addr}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_device_skips_the_frames_it_owed_the_clock() {
        // 5 ms frames at 48 kHz: 2 s of silence from the device is 400 frames of 240.
        let ms = Duration::from_millis;
        assert_eq!(frames_missed(ms(2_000), 240, 48_000), 400 * 240);
        // Not yet due: nothing skipped; one frame and a bit late: one.
        assert_eq!(frames_missed(ms(4), 240, 48_000), 0);
        assert_eq!(frames_missed(ms(7), 240, 48_000), 240);
        // 20 ms Opus frames at 44.1 kHz (882 frames, 20 ms).
        assert_eq!(frames_missed(ms(1_000), 882, 44_100), 50 * 882);
    }
}
