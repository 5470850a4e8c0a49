//! Control frames: the length-prefixed stream splitter and the message decoder, in the clear and
//! through the sealed control channel.
#![no_main]
use echowarp::protocol::frame::{FrameDecoder, Message};
use echowarp::protocol::keys::{transcript, ControlCipher, SessionKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::new();
    // Feed in uneven pieces, as TCP delivers.
    for chunk in data.chunks(7) {
        dec.push(chunk);
    }
    let keys = SessionKeys::derive(b"fuzz", &transcript(&[b"fuzz"])).0;
    let mut open = ControlCipher::new(&keys.server_to_client.control);
    while let Ok(Some(body)) = dec.next_frame() {
        if let Ok(msg) = Message::decode(&body) {
            // Whatever decodes must encode back to the same bytes.
            let mut again = Vec::new();
            msg.encode(&mut again);
            assert_eq!(again, body);
        }
        let mut sealed = body.clone();
        if open.open(&mut sealed).is_ok() {
            let _ = Message::decode(&sealed);
        }
    }
});
