//! A login through the server's session state machine (src/protocol/session/server.rs), the
//! one the server runs, fed in uneven pieces.
//!
//! The first byte chooses how the client's bytes are made:
//! - even: entirely from the input. Whatever they hold, the server must never authenticate
//!   them (that would take a guess of the password and of 256 bits).
//! - odd: by the real client's session, whose password is taken from the input (the server's is
//!   "fuzz"), with one byte of what it sends flipped where the input says. The server must
//!   authenticate exactly when the passwords match and nothing was flipped; the client must
//!   then accept the server's confirmation and parameters, and both must hold the same keys.
#![no_main]
use std::time::{Duration, Instant};

use echowarp::protocol::datagram::{Kind, Opener, Sealer, MAX_DATAGRAM};
use echowarp::protocol::frame::{Codec, Direction, SecurityMode, SessionParams};
use echowarp::protocol::ident::Ident;
use echowarp::protocol::keys::SessionKeys;
use echowarp::protocol::session::{ClientEvent, ClientSession, ServerEvent, ServerSession, Session};
use echowarp::protocol::Password;
use libfuzzer_sys::fuzz_target;

const SERVER_PASSWORD: &str = "fuzz";

fn params() -> SessionParams {
    SessionParams {
        direction: Direction::ServerToClient,
        codec: Codec::PcmS16,
        mode: SecurityMode::Encrypted,
        sample_rate: 48_000,
        channels: 2,
        frame_frames: 240,
        session_id: 7,
    }
}

fn server(now: Instant) -> ServerSession {
    ServerSession::new(
        Ident::ours(None),
        Password::from(SERVER_PASSWORD),
        Duration::from_secs(1),
        now,
    )
}

/// The server driver's part: go on after the identification; the keys once authenticated.
fn decide(s: &mut ServerSession, now: Instant) -> Option<Box<SessionKeys>> {
    let mut keys = None;
    while let Some(e) = s.poll_event() {
        match e {
            ServerEvent::Identified(_) => s.accept(now, None),
            ServerEvent::Authenticated(k) => keys = Some(k),
            _ => {}
        }
    }
    keys
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let now = Instant::now();
    let mut s = server(now);
    if first & 1 == 0 {
        // Pieces of 1 to 8 bytes, as TCP may deliver them; the piece sizes come from the bytes.
        let mut at = 0;
        while at < rest.len() && !s.is_ended() {
            let n = 1 + usize::from(rest[at] % 8);
            let piece = &rest[at..rest.len().min(at + n)];
            s.handle_input(now, piece);
            at += piece.len();
            assert!(decide(&mut s, now).is_none(), "the server authenticated bytes no client made");
            while s.poll_transmit().is_some() {}
        }
        s.handle_closed(now, None);
        assert!(decide(&mut s, now).is_none());
        return;
    }
    // A real client: [flip position: 2 bytes][flip mask: 1 byte][password...]
    let (Some(at), Some(&mask)) = (rest.get(..2), rest.get(2)) else { return };
    let flip_at = usize::from(u16::from_be_bytes([at[0], at[1]]));
    let password = String::from_utf8_lossy(&rest[3..]).into_owned();
    let mut c = ClientSession::new(Ident::ours(None), Password::from(password.as_str()), now);
    let (mut sent, mut flipped, mut server_keys) = (0usize, false, None);
    // Both ways until neither has anything to say.
    for _ in 0..16 {
        let mut quiet = true;
        while let Some(mut bytes) = c.poll_transmit() {
            quiet = false;
            if mask != 0 && (sent..sent + bytes.len()).contains(&flip_at) {
                bytes[flip_at - sent] ^= mask;
                flipped = true;
            }
            sent += bytes.len();
            s.handle_input(now, &bytes);
        }
        if let Some(k) = decide(&mut s, now) {
            server_keys = Some(k);
            s.start(params(), now);
        }
        while let Some(bytes) = s.poll_transmit() {
            quiet = false;
            c.handle_input(now, &bytes);
        }
        if quiet {
            break;
        }
    }
    let should = password == SERVER_PASSWORD && !flipped;
    let client_keys = std::iter::from_fn(|| c.poll_event()).find_map(|e| match e {
        ClientEvent::Connected { params: p, keys } => {
            assert_eq!(p, params());
            Some(keys)
        }
        _ => None,
    });
    match (server_keys, client_keys) {
        (Some(server_keys), Some(keys)) => {
            assert!(should, "authenticated a wrong password or a changed exchange");
            // Both hold the same keys: what the client seals, the server opens.
            let mut sealer = Sealer::new(SecurityMode::Encrypted, 7, &keys.client_to_server);
            let mut opener = Opener::new(SecurityMode::Encrypted, 7, &server_keys.client_to_server);
            let mut dg = vec![0u8; MAX_DATAGRAM];
            let n = sealer.seal(Kind::Audio, b"same keys", &mut dg);
            assert!(opener.open(&mut dg[..n]).is_ok(), "the two sides derived other keys");
        }
        (Some(_), None) => panic!("the server authenticated a client that did not connect"),
        (None, Some(_)) => panic!("the client connected to a server that did not authenticate it"),
        (None, None) => assert!(!should, "the right password was refused"),
    }
});
