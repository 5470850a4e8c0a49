//! The server's media thread: owns the UDP socket and the capture, learns each client's UDP
//! address from its authenticated hello, and fans every captured frame out to the clients whose
//! address is proven. It never sends to any other address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::server::Shared;
use super::sock;
use super::EngineError;
use crate::audio::codec::OpusEncoder;
use crate::audio::{Capture, Frame, Source};
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

pub(crate) fn run(
    udp: UdpSocket,
    source: Box<dyn Source>,
    frame_frames: usize,
    commands: Receiver<MediaCommand>,
    shared: Arc<Shared>,
) -> Result<(), EngineError> {
    let format = source.format();
    let ch = usize::from(format.channels);
    let frame_samples = frame_frames * ch;
    let mut source = Some(source);
    let mut capture: Option<Capture> = None;
    let mut sessions: HashMap<u32, Session> = HashMap::new();
    let mut position: u64 = 0;
    let mut frame = vec![0i16; frame_samples];
    // With redundancy, the frame sent last rides along with the next one.
    let redundancy = shared.cfg.redundancy;
    let mut previous: Option<Vec<i16>> = None;
    let mut opus = match shared.cfg.opus_kbps {
        Some(kbps) => Some(OpusEncoder::new(
            format.sample_rate,
            format.channels,
            kbps,
            shared.cfg.opus_fec,
            frame_frames,
        )?),
        None => None,
    };
    let mut body = Vec::with_capacity(MAX_DATAGRAM);
    let mut out = [0u8; MAX_DATAGRAM];
    let mut rx = [0u8; 2048];
    sock::prepare_for_polling(&udp).map_err(|e| EngineError::Io(format!("UDP socket: {e}")))?;
    let mut last_audio = Instant::now();

    while !shared.stop.load(Ordering::Relaxed) {
        apply_commands(&commands, &mut sessions);

        // Send every frame that is due; then wait for datagrams until the next one is.
        let mut wait = IDLE_WAIT;
        if let Some(cap) = capture.as_mut() {
            loop {
                match cap.next_frame(Instant::now(), &mut frame) {
                    Frame::Full => {
                        last_audio = Instant::now();
                        if let Some(d) = cap.device_delay.get() {
                            shared.counters.device_delay.set(d);
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
                        break;
                    }
                    Frame::Wait(d) => {
                        wait = d;
                        if last_audio.elapsed() > SILENT_DEVICE {
                            return Err(EngineError::Audio(format!(
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
        // A device that signals its deliveries wakes us the moment a frame may be complete.
        let wake = capture.as_ref().and_then(Capture::wake);
        match sock::recv_within_or_wake(&udp, wake, &mut rx, wait.min(IDLE_WAIT)) {
            Ok(Some((n, from))) => {
                // A session registered while we waited may be the one this hello is for.
                apply_commands(&commands, &mut sessions);
                handle_datagram(&mut sessions, &mut rx[..n], from, &shared)
            }
            Ok(None) => {}
            // ICMP errors from earlier sends surface here on some systems; they are not fatal.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }

        if capture.is_none() && sessions.values().any(|s| s.addr.is_some()) {
            if let Some(src) = source.take() {
                tracing::info!("capture started: {}", src.describe());
                capture = Some(src.start()?);
                last_audio = Instant::now();
            }
        }
    }
    Ok(())
}

/// A capture that delivers nothing this long has failed (a running device always delivers,
/// silence included).
const SILENT_DEVICE: Duration = Duration::from_secs(2);
/// How long the media thread waits for datagrams when no frame is due.
const IDLE_WAIT: Duration = Duration::from_millis(50);

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
    } else if shared.cfg.redundancy {
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
