//! The server's side of a login, fed the bytes a client sends, in the order the server takes
//! them (src/engine/server.rs `serve`): the identification line, then control frames in the
//! clear: a PAKE message, then a key confirmation.
//!
//! The first byte chooses how the client's bytes are made:
//! - even: entirely from the input. Whatever it holds, the server must never confirm (a valid
//!   tag would take a guess of the password and of 256 bits).
//! - odd: by a real client whose password is taken from the input (the server's is "fuzz"),
//!   then one byte of everything it sends flipped, where the input says. The server must confirm
//!   exactly when the passwords match and nothing was flipped, and both sides must then hold
//!   the same keys.
#![no_main]
use echowarp::protocol::datagram::{Kind, Opener, Sealer, MAX_DATAGRAM};
use echowarp::protocol::frame::{encode_frame, FrameDecoder, Message, SecurityMode};
use echowarp::protocol::handshake::{ClientHandshake, ServerHandshake};
use echowarp::protocol::ident::{check_client_line, Ident, MAX_IDENT_LEN};
use echowarp::protocol::keys::SessionKeys;
use libfuzzer_sys::fuzz_target;

const SERVER_PASSWORD: &str = "fuzz";

/// What the server made of the client's bytes.
enum Outcome {
    /// Refused before or during the exchange (bad line, bad frame, wrong order, bad message).
    Refused,
    /// The confirmation did not match: 401.
    WrongPassword,
    /// Confirmed: the server's tag to send, and the session's keys.
    Confirmed([u8; 32], SessionKeys),
}

/// Runs the server over `sent`: a line up to '\n', then frames.
fn server(sent: &[u8], our_line: &str) -> Outcome {
    let Some(end) = sent.iter().take(MAX_IDENT_LEN).position(|&b| b == b'\n') else {
        return Outcome::Refused;
    };
    let (line, rest) = sent.split_at(end + 1);
    if check_client_line(line, &Ident::ours(None), false).is_err() {
        return Outcome::Refused;
    }
    let client_line = String::from_utf8_lossy(line).into_owned();
    let mut hs = ServerHandshake::new(SERVER_PASSWORD, &client_line, our_line);
    let mut dec = FrameDecoder::new();
    // As TCP may deliver it: in uneven pieces.
    for chunk in rest.chunks(5) {
        dec.push(chunk);
    }
    let mut next = || match dec.next_frame() {
        Ok(Some(body)) => Message::decode(&body).ok(),
        _ => None,
    };
    let Some(Message::Pake(m)) = next() else {
        return Outcome::Refused;
    };
    if hs.handle_client_pake(&m).is_err() {
        return Outcome::Refused;
    }
    let Some(Message::Confirm(tag)) = next() else {
        return Outcome::Refused;
    };
    match hs.handle_client_confirm(&tag) {
        Ok((server_tag, keys)) => Outcome::Confirmed(server_tag, keys),
        Err(echowarp::protocol::handshake::HandshakeError::AuthFailed) => Outcome::WrongPassword,
        Err(_) => Outcome::Refused,
    }
}

fn frame(msg: &Message, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    msg.encode(&mut body);
    encode_frame(&body, out).expect("a handshake frame fits");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let our_line = Ident::ours(None).to_line();
    if first & 1 == 0 {
        assert!(
            !matches!(server(rest, &our_line), Outcome::Confirmed(..)),
            "the server confirmed bytes no client made"
        );
        return;
    }
    // A real client: [flip position: 2 bytes][flip mask: 1 byte][password...]
    let (Some(at), Some(&mask)) = (rest.get(..2), rest.get(2)) else { return };
    let at = usize::from(u16::from_be_bytes([at[0], at[1]]));
    let password = String::from_utf8_lossy(&rest[3..]).into_owned();
    let client_line = Ident::ours(None).to_line();
    let (mut client, pake) = ClientHandshake::start(&password, &client_line, &our_line);
    // The server's PAKE message comes from a server of its own, with the same lines: the
    // client's confirmation depends on it.
    let mut twin = ServerHandshake::new(SERVER_PASSWORD, &client_line, &our_line);
    let Ok(server_pake) = twin.handle_client_pake(&pake) else {
        panic!("a real client's PAKE message was refused");
    };
    let tag = client
        .handle_server_pake(&server_pake)
        .expect("a real server's PAKE message is accepted");
    let mut sent = client_line.clone().into_bytes();
    frame(&Message::Pake(pake.clone()), &mut sent);
    frame(&Message::Confirm(tag), &mut sent);
    let flipped = mask != 0 && at < sent.len();
    if flipped {
        sent[at] ^= mask;
    }
    // The server under test: the twin, which holds the PAKE state the client answered.
    let outcome = {
        let Some(end) = sent.iter().position(|&b| b == b'\n') else {
            return;
        };
        let (line, frames) = sent.split_at(end + 1);
        if line != client_line.as_bytes() {
            // The line itself was changed: the server sees another transcript.
            server(&sent, &our_line)
        } else {
            let mut dec = FrameDecoder::new();
            dec.push(frames);
            let msgs: Vec<Message> = std::iter::from_fn(|| dec.next_frame().ok().flatten())
                .filter_map(|b| Message::decode(&b).ok())
                .collect();
            match msgs.as_slice() {
                [Message::Pake(p), Message::Confirm(t), ..] if *p == pake => {
                    match twin.handle_client_confirm(t) {
                        Ok((server_tag, keys)) => Outcome::Confirmed(server_tag, keys),
                        Err(_) => Outcome::WrongPassword,
                    }
                }
                // A changed PAKE message: the server under test starts afresh from it.
                _ => server(&sent, &our_line),
            }
        }
    };
    let should = password == SERVER_PASSWORD && !flipped;
    match outcome {
        Outcome::Confirmed(server_tag, server_keys) => {
            assert!(should, "confirmed a wrong password or a changed exchange");
            let keys = client
                .handle_server_confirm(&server_tag)
                .expect("the client accepts the server's confirmation");
            // Both hold the same keys: what the client seals, the server opens.
            let mut sealer = Sealer::new(SecurityMode::Encrypted, 7, &keys.client_to_server);
            let mut opener = Opener::new(SecurityMode::Encrypted, 7, &server_keys.client_to_server);
            let mut dg = vec![0u8; MAX_DATAGRAM];
            let n = sealer.seal(Kind::Audio, b"same keys", &mut dg);
            assert!(opener.open(&mut dg[..n]).is_ok(), "the two sides derived other keys");
        }
        Outcome::WrongPassword | Outcome::Refused => {
            assert!(!should, "the right password was refused")
        }
    }
});
