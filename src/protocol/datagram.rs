//! Audio datagrams: a fixed 16-byte header, a body, and (by session mode) a tag.
//!
//! ```text
//! 0      1      2      3      4              8                      16
//! +------+------+------+------+--------------+----------------------+---------- - - ----+--------+
//! |magic | kind | mode | 0    | session id   | counter (u64 BE)     | body                | tag 16 |
//! +------+------+------+------+--------------+----------------------+---------- - - ----+--------+
//! ```
//! The counter is per direction and never repeats within a session: it is the AEAD nonce and the
//! replay-window index. Cheap checks (length, magic, session, replay window) run before any
//! cryptography, so junk costs almost nothing.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Tag};

use super::coding::{ct_eq, Reader};
use super::frame::SecurityMode;
use super::keys::{aead, mac, nonce_for, DirectionKeys, Secret32, TAG_LEN};
use super::replay::ReplayWindow;

/// First byte of every EchoWarp datagram.
pub const MAGIC: u8 = 0xEC;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Largest datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 1280;
/// Length of the audio body's position field.
pub const POSITION_LEN: usize = 8;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Audio: a u64 frame position and PCM samples.
    Audio = 1,
    /// The client's proof of the session key from its UDP address; empty body, always tagged.
    Hello = 2,
}

/// Why a datagram was dropped; counted, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than a header and its tag, or longer than [`MAX_DATAGRAM`].
    #[error("bad length")]
    BadLength,
    /// Not an EchoWarp datagram, or a kind or mode this session does not use.
    #[error("bad header")]
    BadHeader,
    /// Another session's datagram.
    #[error("unknown session")]
    WrongSession,
    /// A counter seen before, too old, or (without a tag) too far ahead.
    #[error("replayed")]
    Replayed,
    /// The tag did not verify: forged or damaged.
    #[error("authentication failed")]
    BadTag,
}

/// The header fields, read without any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What it carries.
    pub kind: Kind,
    /// The session's protection mode.
    pub mode: SecurityMode,
    /// Which session.
    pub session_id: u32,
    /// Per-direction counter.
    pub counter: u64,
}

impl Header {
    /// Reads a header.
    ///
    /// # Errors
    /// [`DropReason::BadLength`] or [`DropReason::BadHeader`]; never panics.
    pub fn parse(dg: &[u8]) -> Result<Self, DropReason> {
        if dg.len() < HEADER_LEN || dg.len() > MAX_DATAGRAM {
            return Err(DropReason::BadLength);
        }
        let mut r = Reader::new(dg);
        let magic = r.u8().map_err(|_| DropReason::BadLength)?;
        let kind = r.u8().map_err(|_| DropReason::BadLength)?;
        let mode = r.u8().map_err(|_| DropReason::BadLength)?;
        let zero = r.u8().map_err(|_| DropReason::BadLength)?;
        let session_id = r.u32().map_err(|_| DropReason::BadLength)?;
        let counter = r.u64().map_err(|_| DropReason::BadLength)?;
        let kind = match kind {
            1 => Kind::Audio,
            2 => Kind::Hello,
            _ => return Err(DropReason::BadHeader),
        };
        if magic != MAGIC || zero != 0 {
            return Err(DropReason::BadHeader);
        }
        let mode = SecurityMode::from_u8(mode).ok_or(DropReason::BadHeader)?;
        Ok(Self {
            kind,
            mode,
            session_id,
            counter,
        })
    }

    fn write(&self, out: &mut [u8]) {
        out[0] = MAGIC;
        out[1] = self.kind as u8;
        out[2] = self.mode as u8;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.session_id.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
    }
}

/// Whether datagrams of `kind` carry a tag in `mode`. A hello is always tagged: it is how a client
/// proves the session key from its UDP address, whatever the audio's protection.
fn tagged(kind: Kind, mode: SecurityMode) -> bool {
    kind == Kind::Hello || mode != SecurityMode::Plain
}

/// Seals datagrams for one direction of a session.
pub struct Sealer {
    mode: SecurityMode,
    session_id: u32,
    counter: u64,
    aead: ChaCha20Poly1305,
    mac_key: Secret32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealer {{ session: {:08x}, counter: {} }}",
            self.session_id, self.counter
        )
    }
}

impl Sealer {
    /// A sealer for the direction whose keys are `keys`.
    pub fn new(mode: SecurityMode, session_id: u32, keys: &DirectionKeys) -> Self {
        Self {
            mode,
            session_id,
            counter: 0,
            aead: aead(&keys.media),
            mac_key: keys.mac.clone(),
        }
    }

    /// Bytes a datagram with a body of `body_len` bytes takes.
    pub fn datagram_len(&self, kind: Kind, body_len: usize) -> usize {
        HEADER_LEN + body_len + if tagged(kind, self.mode) { TAG_LEN } else { 0 }
    }

    /// Writes a datagram of `kind` around `body` into `out`; returns its length.
    ///
    /// # Panics
    /// When `out` is shorter than [`Sealer::datagram_len`]: callers size it once, up front.
    pub fn seal(&mut self, kind: Kind, body: &[u8], out: &mut [u8]) -> usize {
        let len = self.datagram_len(kind, body.len());
        let counter = self.counter;
        self.counter += 1;
        let header = Header {
            kind,
            mode: self.mode,
            session_id: self.session_id,
            counter,
        };
        let (head, rest) = out[..len].split_at_mut(HEADER_LEN);
        header.write(head);
        rest[..body.len()].copy_from_slice(body);
        if !tagged(kind, self.mode) {
            return len;
        }
        let (payload, tag_out) = rest.split_at_mut(body.len());
        if kind == Kind::Audio && self.mode == SecurityMode::Encrypted {
            match self
                .aead
                .encrypt_inout_detached(&nonce_for(counter), head, payload.into())
            {
                Ok(tag) => tag_out.copy_from_slice(&tag),
                // Only fails for messages over 256 GiB; datagrams are at most 1280 bytes.
                Err(_) => unreachable!("datagram too large for ChaCha20-Poly1305"),
            }
        } else {
            tag_out.copy_from_slice(&mac(&self.mac_key, &[head, payload]));
        }
        len
    }
}

/// Opens datagrams for one direction of a session.
pub struct Opener {
    mode: SecurityMode,
    session_id: u32,
    aead: ChaCha20Poly1305,
    mac_key: Secret32,
    window: ReplayWindow,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener {{ session: {:08x} }}", self.session_id)
    }
}

impl Opener {
    /// An opener for the direction whose keys are `keys`.
    pub fn new(mode: SecurityMode, session_id: u32, keys: &DirectionKeys) -> Self {
        Self {
            mode,
            session_id,
            aead: aead(&keys.media),
            mac_key: keys.mac.clone(),
            window: ReplayWindow::new(),
        }
    }

    /// Checks and, in encrypted mode, decrypts `dg` in place; returns its kind and body.
    ///
    /// # Errors
    /// The [`DropReason`]: drop the datagram and count it.
    pub fn open<'a>(&mut self, dg: &'a mut [u8]) -> Result<(Kind, &'a [u8]), DropReason> {
        let h = Header::parse(dg)?;
        if h.mode != self.mode {
            return Err(DropReason::BadHeader);
        }
        if h.session_id != self.session_id {
            return Err(DropReason::WrongSession);
        }
        let tag_len = if tagged(h.kind, h.mode) { TAG_LEN } else { 0 };
        if dg.len() < HEADER_LEN + tag_len {
            return Err(DropReason::BadLength);
        }
        if !self.window.check(h.counter) {
            return Err(DropReason::Replayed);
        }
        let body_end = dg.len() - tag_len;
        let (head, rest) = dg.split_at_mut(HEADER_LEN);
        let (payload, tag) = rest.split_at_mut(body_end - HEADER_LEN);
        if tag_len != 0 {
            if h.kind == Kind::Audio && h.mode == SecurityMode::Encrypted {
                let tag = Tag::try_from(&tag[..]).map_err(|_| DropReason::BadTag)?;
                self.aead
                    .decrypt_inout_detached(
                        &nonce_for(h.counter),
                        head,
                        (&mut payload[..]).into(),
                        &tag,
                    )
                    .map_err(|_| DropReason::BadTag)?;
            } else if !ct_eq(&mac(&self.mac_key, &[head, payload]), tag) {
                return Err(DropReason::BadTag);
            }
        }
        if tag_len == 0 {
            // Nothing proves this datagram: its counter may move the window only so far.
            if !self.window.accept_unauthenticated(h.counter) {
                return Err(DropReason::Replayed);
            }
        } else {
            self.window.commit(h.counter);
        }
        Ok((h.kind, payload))
    }
}

/// Writes an audio body: the position of its first frame, then the samples as s16le.
pub fn write_audio_body(position: u64, samples: &[i16], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&position.to_be_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Writes a redundant audio body: the position of this frame, the previous frame (when there
/// is one; always full), then this frame (the stream's last may be short).
pub fn write_redundant_body(
    position: u64,
    previous: Option<&[i16]>,
    samples: &[i16],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&position.to_be_bytes());
    for s in previous.unwrap_or_default().iter().chain(samples) {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Splits the sample bytes of a redundant body into (previous frame, this frame), given the
/// bytes of a full frame: a body no longer than one frame carries no previous frame.
pub fn split_redundant(samples: &[u8], frame_bytes: usize) -> (Option<&[u8]>, &[u8]) {
    if samples.len() > frame_bytes {
        let (previous, current) = samples.split_at(frame_bytes);
        (Some(previous), current)
    } else {
        (None, samples)
    }
}

/// Splits an audio body into its position and the coded bytes after it (any length: an Opus
/// packet). PCM bodies go through [`read_audio_body`], which also checks whole samples.
///
/// # Errors
/// [`DropReason::BadLength`] when shorter than the position.
pub fn split_position(body: &[u8]) -> Result<(u64, &[u8]), DropReason> {
    let mut r = Reader::new(body);
    let position = r.u64().map_err(|_| DropReason::BadLength)?;
    Ok((position, r.rest()))
}

/// Splits an audio body into its position and its s16le sample bytes.
///
/// # Errors
/// [`DropReason::BadLength`] when shorter than the position or holding half a sample.
pub fn read_audio_body(body: &[u8]) -> Result<(u64, &[u8]), DropReason> {
    let mut r = Reader::new(body);
    let position = r.u64().map_err(|_| DropReason::BadLength)?;
    let samples = r.rest();
    if !samples.len().is_multiple_of(2) {
        return Err(DropReason::BadLength);
    }
    Ok((position, samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::{transcript, SessionKeys};

    #[test]
    fn redundant_bodies_carry_the_previous_frame_first() {
        let mut body = Vec::new();
        write_redundant_body(480, Some(&[1, 2]), &[3, 4], &mut body);
        let (position, samples) = read_audio_body(&body).expect("reads");
        assert_eq!(position, 480);
        let (prev, cur) = split_redundant(samples, 4);
        assert_eq!(
            (prev, cur),
            (Some(&[1u8, 0, 2, 0][..]), &[3u8, 0, 4, 0][..])
        );
        // The first datagram has none; the last may be short after a full previous one.
        write_redundant_body(0, None, &[3, 4], &mut body);
        assert_eq!(split_redundant(&body[8..], 4), (None, &body[8..]));
        write_redundant_body(960, Some(&[1, 2]), &[3], &mut body);
        assert_eq!(split_redundant(&body[8..], 4).1, &[3u8, 0][..]);
    }

    fn keys() -> SessionKeys {
        SessionKeys::derive(b"k", &transcript(&[b"t"])).0
    }

    fn pair(mode: SecurityMode) -> (Sealer, Opener) {
        let k = keys();
        (
            Sealer::new(mode, 42, &k.server_to_client),
            Opener::new(mode, 42, &k.server_to_client),
        )
    }

    #[test]
    fn round_trip_in_every_mode() {
        for mode in [
            SecurityMode::Plain,
            SecurityMode::Integrity,
            SecurityMode::Encrypted,
        ] {
            let (mut s, mut o) = pair(mode);
            let mut body = Vec::new();
            write_audio_body(480, &[1, -2, 300], &mut body);
            let mut buf = [0u8; MAX_DATAGRAM];
            let n = s.seal(Kind::Audio, &body, &mut buf);
            assert_eq!(n, s.datagram_len(Kind::Audio, body.len()));
            let plain_visible = buf[..n].windows(body.len()).any(|w| w == body.as_slice());
            assert_eq!(plain_visible, mode != SecurityMode::Encrypted, "{mode:?}");
            let mut copy = buf;
            let (kind, got) = o.open(&mut copy[..n]).expect("genuine datagram");
            assert_eq!(kind, Kind::Audio);
            assert_eq!(
                read_audio_body(got),
                Ok((480, &[1, 0, 0xfe, 0xff, 0x2c, 1][..]))
            );
            let mut again = buf;
            assert_eq!(
                o.open(&mut again[..n]),
                Err(DropReason::Replayed),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn forged_and_foreign_datagrams_are_dropped() {
        for mode in [SecurityMode::Integrity, SecurityMode::Encrypted] {
            let (mut s, mut o) = pair(mode);
            let mut buf = [0u8; MAX_DATAGRAM];
            let n = s.seal(Kind::Audio, &[0; 16], &mut buf);
            for i in 0..n {
                let mut bad = buf;
                bad[i] ^= 0x40;
                assert!(
                    o.open(&mut bad[..n]).is_err(),
                    "{mode:?}: flipped byte {i} accepted"
                );
            }
            let other = SessionKeys::derive(b"other", &transcript(&[b"t"])).0;
            let mut forger = Sealer::new(mode, 42, &other.server_to_client);
            let n = forger.seal(Kind::Audio, &[0; 16], &mut buf);
            assert_eq!(o.open(&mut buf[..n]), Err(DropReason::BadTag));
        }
        let (mut s, _) = pair(SecurityMode::Plain);
        let mut o = Opener::new(SecurityMode::Plain, 43, &keys().server_to_client);
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = s.seal(Kind::Audio, &[0; 16], &mut buf);
        assert_eq!(o.open(&mut buf[..n]), Err(DropReason::WrongSession));
    }

    #[test]
    fn a_spoofed_plain_datagram_with_a_huge_counter_does_not_silence_the_stream() {
        let (mut s, mut o) = pair(SecurityMode::Plain);
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut genuine = |s: &mut Sealer, o: &mut Opener| {
            let n = s.seal(Kind::Audio, &[0; 16], &mut buf);
            o.open(&mut buf[..n]).map(|_| ())
        };
        for _ in 0..10 {
            assert_eq!(genuine(&mut s, &mut o), Ok(()));
        }
        let mut spoof = [0u8; HEADER_LEN + 16];
        Header {
            kind: Kind::Audio,
            mode: SecurityMode::Plain,
            session_id: 42,
            counter: 1 << 60,
        }
        .write(&mut spoof);
        assert_eq!(o.open(&mut spoof), Err(DropReason::Replayed));
        for _ in 0..100 {
            assert_eq!(genuine(&mut s, &mut o), Ok(()));
        }
    }

    #[test]
    fn hello_is_tagged_even_in_plain_mode() {
        let (mut s, mut o) = pair(SecurityMode::Plain);
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = s.seal(Kind::Hello, &[], &mut buf);
        assert_eq!(n, HEADER_LEN + TAG_LEN);
        let mut forged = buf;
        forged[HEADER_LEN] ^= 1;
        assert_eq!(o.open(&mut forged[..n]), Err(DropReason::BadTag));
        assert_eq!(
            o.open(&mut buf[..n]).map(|(k, b)| (k, b.len())),
            Ok((Kind::Hello, 0))
        );
    }

    #[test]
    fn golden_header() {
        let (mut s, _) = pair(SecurityMode::Plain);
        let mut buf = [0u8; 64];
        let n = s.seal(Kind::Audio, &[0xaa], &mut buf);
        assert_eq!(
            &buf[..n],
            &[0xEC, 1, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa]
        );
    }

    #[test]
    fn short_and_long_inputs_never_panic() {
        let (_, mut o) = pair(SecurityMode::Encrypted);
        for len in 0..40 {
            let mut junk = vec![MAGIC; len];
            assert!(o.open(&mut junk).is_err());
        }
        let mut huge = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(o.open(&mut huge), Err(DropReason::BadLength));
    }
}
