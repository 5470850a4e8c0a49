//! Session key schedule: everything derives from the SPAKE2 output and the handshake transcript
//! with BLAKE3 `derive_key`, one label per direction and purpose.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::coding::ct_eq;

/// Combines the PAKE output with the transcript into the session's master secret.
pub const LABEL_MASTER: &str = "echowarp 2026-11 v1 master secret";
/// Key of the client's key-confirmation tag.
pub const LABEL_CONFIRM_CLIENT: &str = "echowarp 2026-11 v1 confirm client";
/// Key of the server's key-confirmation tag.
pub const LABEL_CONFIRM_SERVER: &str = "echowarp 2026-11 v1 confirm server";
/// Control frames, client to server (ChaCha20-Poly1305).
pub const LABEL_CONTROL_C2S: &str = "echowarp 2026-11 v1 control client to server";
/// Control frames, server to client (ChaCha20-Poly1305).
pub const LABEL_CONTROL_S2C: &str = "echowarp 2026-11 v1 control server to client";
/// Audio datagrams, client to server (ChaCha20-Poly1305).
pub const LABEL_MEDIA_C2S: &str = "echowarp 2026-11 v1 media client to server";
/// Audio datagrams, server to client (ChaCha20-Poly1305).
pub const LABEL_MEDIA_S2C: &str = "echowarp 2026-11 v1 media server to client";
/// Keyed BLAKE3 tags on datagrams, client to server.
pub const LABEL_MAC_C2S: &str = "echowarp 2026-11 v1 mac client to server";
/// Keyed BLAKE3 tags on datagrams, server to client.
pub const LABEL_MAC_S2C: &str = "echowarp 2026-11 v1 mac server to client";

/// Length of an AEAD or MAC tag on the wire.
pub const TAG_LEN: usize = 16;

/// 32 secret bytes, wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32(pub(crate) [u8; 32]);

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(..)")
    }
}

impl Secret32 {
    fn derive(label: &str, material: &[u8]) -> Self {
        Secret32(blake3::derive_key(label, material))
    }
}

/// The keys for one direction of a session.
#[derive(Debug, Clone)]
pub struct DirectionKeys {
    /// Seals control frames.
    pub control: Secret32,
    /// Seals audio datagrams (encrypted mode).
    pub media: Secret32,
    /// Tags datagrams (integrity mode, and the client's hello in every mode).
    pub mac: Secret32,
}

/// All keys of one session.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// What the client sends.
    pub client_to_server: DirectionKeys,
    /// What the server sends.
    pub server_to_client: DirectionKeys,
}

/// The two key-confirmation tags: each side sends its own and checks the other's. The server's
/// is a secret until sent (it proves the password), so both are wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Confirmations {
    /// Sent by the client.
    pub client: [u8; 32],
    /// Sent by the server.
    pub server: [u8; 32],
}

impl std::fmt::Debug for Confirmations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirmations(..)")
    }
}

/// Hashes the handshake's public inputs, each length-prefixed so that no two transcripts collide.
pub fn transcript(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

impl SessionKeys {
    /// Derives every key and both confirmation tags from the PAKE output and the transcript.
    pub fn derive(shared: &[u8], transcript: &[u8; 32]) -> (Self, Confirmations) {
        let mut material = Vec::with_capacity(shared.len() + 32);
        material.extend_from_slice(shared);
        material.extend_from_slice(transcript);
        let master = Secret32::derive(LABEL_MASTER, &material);
        material.zeroize();
        let sub = |label| Secret32::derive(label, &master.0);
        let confirm = |label| {
            let k = sub(label);
            *blake3::keyed_hash(&k.0, transcript).as_bytes()
        };
        let keys = SessionKeys {
            client_to_server: DirectionKeys {
                control: sub(LABEL_CONTROL_C2S),
                media: sub(LABEL_MEDIA_C2S),
                mac: sub(LABEL_MAC_C2S),
            },
            server_to_client: DirectionKeys {
                control: sub(LABEL_CONTROL_S2C),
                media: sub(LABEL_MEDIA_S2C),
                mac: sub(LABEL_MAC_S2C),
            },
        };
        let confirmations = Confirmations {
            client: confirm(LABEL_CONFIRM_CLIENT),
            server: confirm(LABEL_CONFIRM_SERVER),
        };
        (keys, confirmations)
    }
}

/// The ChaCha20-Poly1305 nonce for a 64-bit counter (WireGuard's layout: 4 zero bytes, then LE).
pub fn nonce_for(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// Builds the AEAD for a key.
pub fn aead(key: &Secret32) -> ChaCha20Poly1305 {
    // By reference: no copy of the key is left on the stack.
    ChaCha20Poly1305::new((&key.0).into())
}

/// The keyed BLAKE3 tag, truncated to [`TAG_LEN`], over `parts` in order.
pub fn mac(key: &Secret32, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// A sealing or opening failure; carries nothing that could leak key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

/// One direction of the sealed control channel: an AEAD and an implicit counter (TCP keeps order).
pub struct ControlCipher {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl std::fmt::Debug for ControlCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlCipher {{ counter: {} }}", self.counter)
    }
}

impl ControlCipher {
    /// A cipher for one direction, starting at counter 0.
    pub fn new(key: &Secret32) -> Self {
        Self {
            aead: aead(key),
            counter: 0,
        }
    }

    /// Encrypts `body` in place and appends the tag.
    pub fn seal(&mut self, body: &mut Vec<u8>) {
        let nonce = nonce_for(self.counter);
        self.counter += 1;
        match self
            .aead
            .encrypt_inout_detached(&nonce, &[], body.as_mut_slice().into())
        {
            Ok(tag) => body.extend_from_slice(&tag),
            // ChaCha20-Poly1305 fails only past 256 GiB in one message; frames are 16 KiB at most.
            Err(_) => unreachable!("control frame too large for ChaCha20-Poly1305"),
        }
    }

    /// Decrypts in place; on success `sealed` holds the plaintext (the tag removed).
    ///
    /// # Errors
    /// [`OpenError`] when the frame was forged, altered, reordered or replayed.
    pub fn open(&mut self, sealed: &mut Vec<u8>) -> Result<(), OpenError> {
        let split = sealed.len().checked_sub(TAG_LEN).ok_or(OpenError)?;
        let tag = Tag::try_from(&sealed[split..]).map_err(|_| OpenError)?;
        let nonce = nonce_for(self.counter);
        self.aead
            .decrypt_inout_detached(&nonce, &[], (&mut sealed[..split]).into(), &tag)
            .map_err(|_| OpenError)?;
        self.counter += 1;
        sealed.truncate(split);
        Ok(())
    }
}

/// Checks a received confirmation tag in constant time.
pub fn confirm_matches(expected: &[u8; 32], got: &[u8]) -> bool {
    ct_eq(expected, got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_and_purposes_get_distinct_keys() {
        let (k, c) = SessionKeys::derive(b"shared", &transcript(&[b"a", b"b"]));
        let all = [
            &k.client_to_server.control.0,
            &k.client_to_server.media.0,
            &k.client_to_server.mac.0,
            &k.server_to_client.control.0,
            &k.server_to_client.media.0,
            &k.server_to_client.mac.0,
            &c.client,
            &c.server,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.client_to_server.media.0)));
    }

    #[test]
    fn transcript_is_length_prefixed() {
        assert_ne!(transcript(&[b"ab", b"c"]), transcript(&[b"a", b"bc"]));
    }

    #[test]
    fn control_cipher_round_trip_and_tamper() {
        let key = Secret32([7; 32]);
        let (mut tx, mut rx) = (ControlCipher::new(&key), ControlCipher::new(&key));
        let mut a = b"hello".to_vec();
        tx.seal(&mut a);
        assert_ne!(&a[..5], b"hello");
        let mut tampered = a.clone();
        tampered[0] ^= 1;
        assert_eq!(rx.open(&mut tampered), Err(OpenError));
        rx.open(&mut a).expect("genuine frame opens");
        assert_eq!(a, b"hello");
        // A replay of the first frame fails: the receiver's counter moved on.
        let mut b = b"again".to_vec();
        let mut tx2 = ControlCipher::new(&key);
        tx2.seal(&mut b);
        assert_eq!(rx.open(&mut b), Err(OpenError));
    }
}
