//! Length-prefixed binary control frames that follow the identification lines.
//!
//! A frame is a big-endian `u16` length and that many bytes of body; the body starts with a type
//! byte. The handshake frames travel in the clear; from the first frame after key confirmation
//! every body is sealed with the control key of its direction (see `keys::ControlCipher`).

use super::coding::{Reader, UnexpectedEnd};

/// Largest frame body accepted or sent.
pub const MAX_FRAME_LEN: usize = 16 * 1024;
/// Largest audio payload a datagram carries, so that a datagram fits a 1280-byte MTU.
pub const MAX_AUDIO_BYTES: usize = 1280 - 16 - 8 - 16;

/// Why bytes from the network could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a value.
    #[error("truncated message")]
    UnexpectedEnd,
    /// A frame announced more than [`MAX_FRAME_LEN`] bytes, or none.
    #[error("frame length {0} out of range")]
    BadLength(usize),
    /// An unknown message type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A field held a value outside its range.
    #[error("invalid value for {0}")]
    BadValue(&'static str),
    /// Bytes left over after the message.
    #[error("trailing bytes after message")]
    Trailing,
}

impl From<UnexpectedEnd> for WireError {
    fn from(_: UnexpectedEnd) -> Self {
        WireError::UnexpectedEnd
    }
}

/// Who captures and who plays. Only `ServerToClient` exists today; the field keeps room for
/// reverse and duplex streaming (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The server captures, clients play.
    ServerToClient = 0,
}

/// How audio is coded in datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Signed 16-bit little-endian PCM, interleaved.
    PcmS16 = 0,
    /// Opus: the body is the position, then one Opus packet of `frame_frames` frames.
    Opus = 1,
    /// As `PcmS16`, each datagram also carrying the previous frame (for lossy links): the body
    /// is the position, then the previous frame (absent in the first datagram), then this one.
    PcmS16Redundant = 2,
}

impl Codec {
    /// A word for logs and the status line.
    pub fn name(self) -> &'static str {
        match self {
            Codec::PcmS16 => "pcm",
            Codec::PcmS16Redundant => "pcm+redundancy",
            Codec::Opus => "opus",
        }
    }
}

/// How audio datagrams are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// Session id and peer address checks only.
    Plain = 0,
    /// A keyed BLAKE3 tag on every datagram.
    Integrity = 1,
    /// ChaCha20-Poly1305 on every datagram.
    Encrypted = 2,
}

impl SecurityMode {
    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Plain),
            1 => Some(Self::Integrity),
            2 => Some(Self::Encrypted),
            _ => None,
        }
    }

    /// A word for logs and status lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Integrity => "integrity",
            Self::Encrypted => "encrypted",
        }
    }
}

/// What the server announces about the stream after authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    /// Who captures.
    pub direction: Direction,
    /// Audio coding.
    pub codec: Codec,
    /// Datagram protection.
    pub mode: SecurityMode,
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels (1 or 2).
    pub channels: u8,
    /// Frames in each audio datagram.
    pub frame_frames: u16,
    /// Carried in every datagram of the session.
    pub session_id: u32,
}

impl SessionParams {
    /// Bytes of audio in one full datagram.
    pub fn frame_bytes(&self) -> usize {
        usize::from(self.frame_frames) * usize::from(self.channels) * 2
    }

    /// The codec's name for logs and the status line.
    pub fn codec_name(&self) -> &'static str {
        self.codec.name()
    }

    /// Audio bytes in the largest datagram body: one frame, or two with redundancy.
    pub fn audio_bytes(&self) -> usize {
        match self.codec {
            Codec::PcmS16 => self.frame_bytes(),
            Codec::PcmS16Redundant => 2 * self.frame_bytes(),
            // Coded: any size up to the limit; the frame count is checked separately.
            Codec::Opus => 0,
        }
    }
}

/// Whether `frames` at `rate` is a frame Opus codes: 2.5, 5, 10 or 20 ms at 8, 12, 16, 24 or
/// 48 kHz.
pub fn opus_frame_ok(rate: u32, frames: u32) -> bool {
    [8_000, 12_000, 16_000, 24_000, 48_000].contains(&rate)
        && [120u64, 240, 480, 960]
            .iter()
            .any(|&f| f * u64::from(rate) == u64::from(frames) * 48_000)
}

/// Liveness and counters, both ways, once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Increments with each heartbeat.
    pub seq: u32,
    /// Sender's monotonic clock, microseconds since its session began.
    pub time_us: u64,
    /// Audio datagrams the sender accepted so far.
    pub received: u64,
    /// Audio datagrams the sender counted as lost so far.
    pub lost: u64,
    /// The `time_us` of the last heartbeat the sender received from its peer.
    pub echo_time_us: u64,
    /// Microseconds between receiving that heartbeat and sending this one;
    /// [`Heartbeat::NO_ECHO`] when none has been received yet. With `echo_time_us` the peer
    /// learns the round-trip time and the clock offset (as NTP does).
    pub echo_hold_us: u32,
    /// Where the stream was when (the server, from protocol 1.1 on; absent from older peers).
    pub anchor: Option<Anchor>,
}

/// The sound at stream frame `position` entered the sender's capture device at `time_us` on
/// the sender's session clock (that of [`Heartbeat::time_us`], negative before the session
/// began). With the clock offset the heartbeats measure, the client learns when each sound it
/// plays was captured, and so the end-to-end latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// A stream position, in frames.
    pub position: u64,
    /// When that frame's sound was captured, µs on the sender's session clock.
    pub time_us: i64,
}

impl Heartbeat {
    /// `echo_hold_us` when there is nothing to echo yet.
    pub const NO_ECHO: u32 = u32::MAX;
}

/// Why a peer ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodbyeReason {
    /// The sender is stopping (Ctrl-C, quit): a client reconnects.
    Shutdown = 0,
    /// The stream ended (a file source reached its end): play out up to `end_position`, then stop.
    EndOfStream = 1,
}

/// The last control message of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    /// Why.
    pub reason: GoodbyeReason,
    /// For `EndOfStream`: the stream's length in frames.
    pub end_position: u64,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A SPAKE2 message (clear).
    Pake(Vec<u8>),
    /// A key-confirmation tag (clear).
    Confirm([u8; 32]),
    /// The server rejects the client's confirmation: wrong password (clear).
    AuthFailed,
    /// The stream's format and the session id (sealed).
    Params(SessionParams),
    /// Liveness (sealed).
    Heartbeat(Heartbeat),
    /// The server has the client's UDP address from its hello datagram (sealed).
    UdpReady,
    /// End of session (sealed).
    Goodbye(Goodbye),
}

mod ty {
    pub(super) const PAKE: u8 = 0x01;
    pub(super) const CONFIRM: u8 = 0x02;
    pub(super) const AUTH_FAILED: u8 = 0x03;
    pub(super) const PARAMS: u8 = 0x10;
    pub(super) const HEARTBEAT: u8 = 0x11;
    pub(super) const UDP_READY: u8 = 0x12;
    pub(super) const GOODBYE: u8 = 0x13;
}

impl Message {
    /// The message's kind, for logs and errors (its contents may come from a hostile peer).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Pake(_) => "a PAKE message",
            Message::Confirm(_) => "a key confirmation",
            Message::AuthFailed => "an authentication failure",
            Message::Params(_) => "session parameters",
            Message::Heartbeat(_) => "a heartbeat",
            Message::UdpReady => "a UDP confirmation",
            Message::Goodbye(_) => "a goodbye",
        }
    }

    /// Encodes the body (type byte first) into `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Pake(m) => {
                out.push(ty::PAKE);
                out.extend_from_slice(m);
            }
            Message::Confirm(t) => {
                out.push(ty::CONFIRM);
                out.extend_from_slice(t);
            }
            Message::AuthFailed => out.push(ty::AUTH_FAILED),
            Message::Params(p) => {
                out.push(ty::PARAMS);
                out.extend_from_slice(&[
                    p.direction as u8,
                    p.codec as u8,
                    p.mode as u8,
                    p.channels,
                ]);
                out.extend_from_slice(&p.sample_rate.to_be_bytes());
                out.extend_from_slice(&p.frame_frames.to_be_bytes());
                out.extend_from_slice(&p.session_id.to_be_bytes());
            }
            Message::Heartbeat(h) => {
                out.push(ty::HEARTBEAT);
                out.extend_from_slice(&h.seq.to_be_bytes());
                out.extend_from_slice(&h.time_us.to_be_bytes());
                out.extend_from_slice(&h.received.to_be_bytes());
                out.extend_from_slice(&h.lost.to_be_bytes());
                out.extend_from_slice(&h.echo_time_us.to_be_bytes());
                out.extend_from_slice(&h.echo_hold_us.to_be_bytes());
                // Protocol 1.1's addition, at the end: a 1.0 body is a prefix of it.
                if let Some(a) = h.anchor {
                    out.extend_from_slice(&a.position.to_be_bytes());
                    out.extend_from_slice(&a.time_us.to_be_bytes());
                }
            }
            Message::UdpReady => out.push(ty::UDP_READY),
            Message::Goodbye(g) => {
                out.push(ty::GOODBYE);
                out.push(g.reason as u8);
                out.extend_from_slice(&g.end_position.to_be_bytes());
            }
        }
    }

    /// Decodes one body.
    ///
    /// # Errors
    /// [`WireError`] for anything malformed; never panics.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let msg = match r.u8()? {
            ty::PAKE => Message::Pake(r.rest().to_vec()),
            ty::CONFIRM => Message::Confirm(r.fixed()?),
            ty::AUTH_FAILED => Message::AuthFailed,
            ty::PARAMS => {
                let direction = match r.u8()? {
                    0 => Direction::ServerToClient,
                    _ => return Err(WireError::BadValue("direction")),
                };
                let codec = match r.u8()? {
                    0 => Codec::PcmS16,
                    1 => Codec::Opus,
                    2 => Codec::PcmS16Redundant,
                    _ => return Err(WireError::BadValue("codec")),
                };
                let mode = SecurityMode::from_u8(r.u8()?).ok_or(WireError::BadValue("mode"))?;
                let channels = r.u8()?;
                let sample_rate = r.u32()?;
                let frame_frames = r.u16()?;
                let session_id = r.u32()?;
                let p = SessionParams {
                    direction,
                    codec,
                    mode,
                    sample_rate,
                    channels,
                    frame_frames,
                    session_id,
                };
                if !(1..=2).contains(&channels) {
                    return Err(WireError::BadValue("channels"));
                }
                if !(8_000..=192_000).contains(&sample_rate) {
                    return Err(WireError::BadValue("sample rate"));
                }
                if frame_frames == 0 || p.audio_bytes() > MAX_AUDIO_BYTES {
                    return Err(WireError::BadValue("frame size"));
                }
                if codec == Codec::Opus && !opus_frame_ok(sample_rate, u32::from(frame_frames)) {
                    return Err(WireError::BadValue("opus frame size"));
                }
                Message::Params(p)
            }
            ty::HEARTBEAT => Message::Heartbeat(Heartbeat {
                seq: r.u32()?,
                time_us: r.u64()?,
                received: r.u64()?,
                lost: r.u64()?,
                echo_time_us: r.u64()?,
                echo_hold_us: r.u32()?,
                anchor: if r.remaining() == 0 {
                    None
                } else {
                    Some(Anchor {
                        position: r.u64()?,
                        time_us: i64::from_be_bytes(r.fixed()?),
                    })
                },
            }),
            ty::UDP_READY => Message::UdpReady,
            ty::GOODBYE => {
                let reason = match r.u8()? {
                    0 => GoodbyeReason::Shutdown,
                    1 => GoodbyeReason::EndOfStream,
                    _ => return Err(WireError::BadValue("goodbye reason")),
                };
                Message::Goodbye(Goodbye {
                    reason,
                    end_position: r.u64()?,
                })
            }
            other => return Err(WireError::UnknownType(other)),
        };
        if r.remaining() != 0 {
            return Err(WireError::Trailing);
        }
        Ok(msg)
    }
}

/// Prefixes a body with its length.
///
/// # Errors
/// [`WireError::BadLength`] for an empty body or one over [`MAX_FRAME_LEN`].
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    if body.is_empty() || body.len() > MAX_FRAME_LEN {
        return Err(WireError::BadLength(body.len()));
    }
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Splits a byte stream into frame bodies; feed it whatever a read returned.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete body, if one has arrived.
    ///
    /// # Errors
    /// [`WireError::BadLength`] when the peer announced an empty or oversized frame: the stream
    /// cannot be resynchronised, so close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(head) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len == 0 || len > MAX_FRAME_LEN {
            return Err(WireError::BadLength(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let body = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SessionParams {
        SessionParams {
            direction: Direction::ServerToClient,
            codec: Codec::PcmS16,
            mode: SecurityMode::Encrypted,
            sample_rate: 48_000,
            channels: 2,
            frame_frames: 240,
            session_id: 0x0102_0304,
        }
    }

    #[test]
    fn golden_bytes() {
        let mut out = Vec::new();
        Message::Params(params()).encode(&mut out);
        assert_eq!(
            out,
            [0x10, 0, 0, 2, 2, 0, 0, 0xbb, 0x80, 0, 240, 1, 2, 3, 4]
        );
        out.clear();
        Message::Goodbye(Goodbye {
            reason: GoodbyeReason::EndOfStream,
            end_position: 258,
        })
        .encode(&mut out);
        assert_eq!(out, [0x13, 1, 0, 0, 0, 0, 0, 0, 1, 2]);
        let mut framed = Vec::new();
        encode_frame(&[0x12], &mut framed).expect("small frame");
        assert_eq!(framed, [0, 1, 0x12]);
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Message::Pake(vec![1; 33]),
            Message::Confirm([9; 32]),
            Message::AuthFailed,
            Message::Params(params()),
            Message::Heartbeat(Heartbeat {
                seq: 7,
                time_us: 1 << 40,
                received: 5,
                lost: 1,
                echo_time_us: 999_000,
                echo_hold_us: 250,
                anchor: None,
            }),
            Message::UdpReady,
            Message::Goodbye(Goodbye {
                reason: GoodbyeReason::Shutdown,
                end_position: 0,
            }),
        ];
        for m in msgs {
            let mut b = Vec::new();
            m.encode(&mut b);
            assert_eq!(Message::decode(&b), Ok(m.clone()));
            for cut in 1..b.len() {
                if !matches!(m, Message::Pake(_)) {
                    assert!(Message::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn a_heartbeat_with_an_anchor_round_trips_and_without_one_reads_as_protocol_1_0() {
        let plain = Heartbeat {
            seq: 3,
            time_us: 2_000_000,
            received: 100,
            lost: 0,
            echo_time_us: 1_000_000,
            echo_hold_us: 40,
            anchor: None,
        };
        let anchored = Heartbeat {
            anchor: Some(Anchor {
                position: 96_000,
                time_us: -1_500,
            }),
            ..plain
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Message::Heartbeat(plain).encode(&mut a);
        Message::Heartbeat(anchored).encode(&mut b);
        // 1.0's body (type, 4 + 8 + 8 + 8 + 8 + 4 bytes), then 16 bytes of anchor.
        assert_eq!((a.len(), b.len()), (41, 57));
        assert_eq!(b[..41], a[..]);
        assert_eq!(Message::decode(&b), Ok(Message::Heartbeat(anchored)));
        assert_eq!(Message::decode(&a), Ok(Message::Heartbeat(plain)));
        // A body cut anywhere but at 1.0's end is malformed.
        for cut in (1..b.len()).filter(|&c| c != a.len()) {
            assert!(Message::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Message::decode(&long).is_err());
    }

    #[test]
    fn params_out_of_range_are_rejected() {
        for (i, v) in [(3usize, 9u8), (4, 3), (4, 0)] {
            let mut b = Vec::new();
            Message::Params(params()).encode(&mut b);
            b[i] = v;
            assert!(
                matches!(Message::decode(&b), Err(WireError::BadValue(_))),
                "byte {i}={v}"
            );
        }
    }

    #[test]
    fn decoder_reassembles_and_rejects_bad_lengths() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 3, 0x11]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0x22, 0x33, 0, 1]);
        assert_eq!(d.next_frame(), Ok(Some(vec![0x11, 0x22, 0x33])));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[7]);
        assert_eq!(d.next_frame(), Ok(Some(vec![7])));
        let mut bad = FrameDecoder::new();
        bad.push(&[0xff, 0xff]);
        assert_eq!(bad.next_frame(), Err(WireError::BadLength(0xffff)));
        let mut empty = FrameDecoder::new();
        empty.push(&[0, 0]);
        assert_eq!(empty.next_frame(), Err(WireError::BadLength(0)));
    }
}
