//! Audio datagrams: header parsing and opening in every mode; and sealing arbitrary bodies, which
//! must open back to themselves exactly once.
#![no_main]
use echowarp::protocol::datagram::{read_audio_body, Header, Kind, Opener, Sealer, MAX_DATAGRAM};
use echowarp::protocol::frame::SecurityMode;
use echowarp::protocol::keys::{transcript, SessionKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mode = [SecurityMode::Plain, SecurityMode::Integrity, SecurityMode::Encrypted][usize::from(first % 3)];
    let keys = SessionKeys::derive(b"fuzz", &transcript(&[b"fuzz"])).0;
    let mut opener = Opener::new(mode, 42, &keys.server_to_client);
    if first & 0x80 == 0 {
        let _ = Header::parse(rest);
        let mut dg = rest.to_vec();
        if let Ok((Kind::Audio, body)) = opener.open(&mut dg) {
            let _ = read_audio_body(body);
        }
    } else {
        let body = &rest[..rest.len().min(MAX_DATAGRAM - 64)];
        let mut sealer = Sealer::new(mode, 42, &keys.server_to_client);
        let kind = if first & 0x40 == 0 { Kind::Audio } else { Kind::Hello };
        let mut out = vec![0u8; MAX_DATAGRAM];
        let n = sealer.seal(kind, body, &mut out);
        let mut copy = out[..n].to_vec();
        let (k, opened) = opener.open(&mut copy).expect("a sealed datagram opens");
        assert_eq!((k, opened), (kind, body));
        assert!(opener.open(&mut out[..n]).is_err(), "a replay must be refused");
    }
});
