//! Identification and status lines: whatever a peer sends first.
#![no_main]
use echowarp::protocol::ident::{check_client_line, Ident, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = Ident::ours(None);
    if let Some(id) = Ident::parse(data) {
        // Anything accepted must print back to a line that parses to the same thing.
        assert_eq!(Ident::parse(id.to_line().as_bytes()), Some(id));
    }
    let _ = Status::parse(data);
    let _ = check_client_line(data, &ours, data.first().is_some_and(|b| b & 1 == 1));
});
