//! Password-authenticated key exchange (SPAKE2 over Ed25519) with key confirmation both ways.
//!
//! The password never leaves either side: each sends one SPAKE2 message, both derive the same key
//! only if they used the same password, and each proves it holds that key with a confirmation tag
//! bound to both identification lines. The client confirms first, so the server never reveals
//! anything that would let a wrong-password client test a guess offline.

use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::keys::{confirm_matches, transcript, Confirmations, SessionKeys};

/// SPAKE2 identity of side A (the client).
pub const ID_CLIENT: &[u8] = b"echowarp client";
/// SPAKE2 identity of side B (the server).
pub const ID_SERVER: &[u8] = b"echowarp server";
/// Length of a SPAKE2 Ed25519 message (a side byte and a compressed point).
pub const PAKE_MSG_LEN: usize = 33;

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's message was malformed.
    #[error("malformed handshake message")]
    BadMessage,
    /// The peer does not hold the same password (its confirmation did not match).
    #[error("key confirmation failed")]
    AuthFailed,
}

fn start(password: &str, client: bool) -> (Spake2<Ed25519Group>, Vec<u8>) {
    let pw = Password::new(password.as_bytes());
    let (a, b) = (Identity::new(ID_CLIENT), Identity::new(ID_SERVER));
    if client {
        Spake2::<Ed25519Group>::start_a(&pw, &a, &b)
    } else {
        Spake2::<Ed25519Group>::start_b(&pw, &a, &b)
    }
}

fn finish(
    state: Spake2<Ed25519Group>,
    peer_msg: &[u8],
    lines: (&str, &str),
    msgs: (&[u8], &[u8]),
) -> Result<(SessionKeys, Confirmations), HandshakeError> {
    if peer_msg.len() != PAKE_MSG_LEN {
        return Err(HandshakeError::BadMessage);
    }
    // The PAKE output is wiped once the keys are derived (the `spake2` crate wipes none of its
    // own state: its secret scalar and password copy go when `state` is consumed here).
    let shared = zeroize::Zeroizing::new(
        state
            .finish(peer_msg)
            .map_err(|_| HandshakeError::BadMessage)?,
    );
    let t = transcript(&[lines.0.as_bytes(), lines.1.as_bytes(), msgs.0, msgs.1]);
    Ok(SessionKeys::derive(&shared, &t))
}

/// The client side: `start`, send the message, `handle_server_pake`, send the confirmation,
/// then `handle_server_confirm`.
#[derive(Debug)]
pub struct ClientHandshake {
    state: Option<Spake2<Ed25519Group>>,
    msg: Vec<u8>,
    lines: (String, String),
    pending: Option<(SessionKeys, zeroize::Zeroizing<[u8; 32]>)>,
}

impl ClientHandshake {
    /// Starts with both identification lines as sent (newlines included); returns the first message.
    pub fn start(password: &str, client_line: &str, server_line: &str) -> (Self, Vec<u8>) {
        let (state, msg) = start(password, true);
        let hs = Self {
            state: Some(state),
            msg: msg.clone(),
            lines: (client_line.to_owned(), server_line.to_owned()),
            pending: None,
        };
        (hs, msg)
    }

    /// Takes the server's SPAKE2 message; returns the client's confirmation tag to send.
    ///
    /// # Errors
    /// [`HandshakeError::BadMessage`] for a malformed message or a second call.
    pub fn handle_server_pake(&mut self, msg: &[u8]) -> Result<[u8; 32], HandshakeError> {
        let state = self.state.take().ok_or(HandshakeError::BadMessage)?;
        let lines = (self.lines.0.as_str(), self.lines.1.as_str());
        let (keys, c) = finish(state, msg, lines, (&self.msg, msg))?;
        self.pending = Some((keys, zeroize::Zeroizing::new(c.server)));
        Ok(c.client)
    }

    /// Checks the server's confirmation tag; on success the session keys are ready.
    ///
    /// # Errors
    /// [`HandshakeError::AuthFailed`] when the server used another password.
    pub fn handle_server_confirm(self, tag: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let (keys, expected) = self.pending.ok_or(HandshakeError::BadMessage)?;
        if confirm_matches(&expected, tag) {
            Ok(keys)
        } else {
            Err(HandshakeError::AuthFailed)
        }
    }
}

/// The server side: `handle_client_pake` (which answers with the server's message), then
/// `handle_client_confirm` (which answers with the server's confirmation).
#[derive(Debug)]
pub struct ServerHandshake {
    password: super::Password,
    lines: (String, String),
    pending: Option<(SessionKeys, Confirmations)>,
}

impl ServerHandshake {
    /// Prepares a server handshake for the two identification lines as sent.
    pub fn new(password: &str, client_line: &str, server_line: &str) -> Self {
        Self {
            password: super::Password::from(password),
            lines: (client_line.to_owned(), server_line.to_owned()),
            pending: None,
        }
    }

    /// Takes the client's SPAKE2 message; returns the server's message to send.
    ///
    /// # Errors
    /// [`HandshakeError::BadMessage`] for a malformed message.
    pub fn handle_client_pake(&mut self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let (state, ours) = start(self.password.expose(), false);
        let lines = (self.lines.0.as_str(), self.lines.1.as_str());
        self.pending = Some(finish(state, msg, lines, (msg, &ours))?);
        Ok(ours)
    }

    /// Checks the client's confirmation; returns the server's confirmation to send and the keys.
    ///
    /// # Errors
    /// [`HandshakeError::AuthFailed`] when the client used another password: answer 401.
    pub fn handle_client_confirm(
        self,
        tag: &[u8],
    ) -> Result<([u8; 32], SessionKeys), HandshakeError> {
        let (keys, c) = self.pending.ok_or(HandshakeError::BadMessage)?;
        if confirm_matches(&c.client, tag) {
            Ok((c.server, keys))
        } else {
            Err(HandshakeError::AuthFailed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CL: &str = "ECHOWARP/1.0 0.1.0\n";
    const SL: &str = "ECHOWARP/1.0 0.1.0\n";

    fn run(client_pw: &str, server_pw: &str) -> (Result<SessionKeys, HandshakeError>, bool) {
        let (mut c, m1) = ClientHandshake::start(client_pw, CL, SL);
        let mut s = ServerHandshake::new(server_pw, CL, SL);
        let m2 = s.handle_client_pake(&m1).expect("valid message");
        let tag_c = c.handle_server_pake(&m2).expect("valid message");
        match s.handle_client_confirm(&tag_c) {
            Ok((tag_s, server_keys)) => {
                let keys = c.handle_server_confirm(&tag_s);
                let same = keys.as_ref().is_ok_and(|k| {
                    k.server_to_client.media.0 == server_keys.server_to_client.media.0
                });
                (keys, same)
            }
            Err(e) => (Err(e), false),
        }
    }

    #[test]
    fn same_password_agrees_on_keys() {
        let (keys, same) = run("hunter2", "hunter2");
        assert!(keys.is_ok() && same);
        let (keys, same) = run("", "");
        assert!(
            keys.is_ok() && same,
            "empty password still gives an encrypted session"
        );
    }

    #[test]
    fn wrong_password_fails_at_the_server() {
        assert_eq!(
            run("hunter2", "hunter3").0.err(),
            Some(HandshakeError::AuthFailed)
        );
    }

    #[test]
    fn messages_do_not_contain_the_password() {
        let pw = "correct horse battery staple";
        let (_, m1) = ClientHandshake::start(pw, CL, SL);
        assert_eq!(m1.len(), PAKE_MSG_LEN);
        assert!(!m1
            .windows(4)
            .any(|w| pw.as_bytes().windows(4).any(|p| p == w)));
    }

    #[test]
    fn identification_lines_are_bound() {
        let (mut c, m1) = ClientHandshake::start("pw", CL, SL);
        let mut s = ServerHandshake::new("pw", CL, "ECHOWARP/1.0 other\n");
        let m2 = s.handle_client_pake(&m1).expect("valid message");
        let tag_c = c.handle_server_pake(&m2).expect("valid message");
        assert_eq!(
            s.handle_client_confirm(&tag_c).err(),
            Some(HandshakeError::AuthFailed)
        );
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let mut s = ServerHandshake::new("pw", CL, SL);
        assert_eq!(
            s.handle_client_pake(&[0; 5]),
            Err(HandshakeError::BadMessage)
        );
        assert_eq!(
            s.handle_client_pake(&[0xff; PAKE_MSG_LEN]),
            Err(HandshakeError::BadMessage)
        );
    }
}
