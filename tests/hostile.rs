//! Hostile input at a running server while a legitimate client streams: junk datagrams, forged
//! and replayed hellos, TCP garbage, connections that never finish identifying. The legitimate
//! stream must stay sample-exact, memory flat, nothing may panic, and the server must never send
//! UDP to an address that has not proved a session key.
//!
//! Needs: the release binary (`ECHOWARP_RELEASE_BIN`); 127.0.0.2 on loopback (Linux has it).

mod common;
use common::*;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::login::{connect_from, login_from, Login};
use echowarp::protocol::datagram::{Kind, Sealer, HEADER_LEN, MAGIC};
use echowarp::protocol::ident::Ident;
use echowarp::protocol::keys::TAG_LEN;

/// xorshift: reproducible junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Counts datagrams arriving at `sock` for `wait`.
fn received(sock: &UdpSocket, wait: Duration) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let deadline = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if sock.recv(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn hostile_traffic_leaves_the_legitimate_stream_exact() {
    let sb = Sandbox::release();
    let want = write_test_wav(&sb.path("in.wav"), 4.0, 48_000, 2);
    let port: u16 = free_port();
    let p = port.to_string();
    let mut server = sb.spawn(&[
        "-d",
        "wav:in.wav",
        "-u",
        &p,
        "-p",
        "pw",
        "-w",
        "2",
        "-r",
        "0",
    ]);
    server.wait_for("listening on", SECS(10));
    let target: SocketAddr = ([127, 0, 0, 1], port).into();

    // The legitimate client first: the file streams from its start when the first client joins.
    let mut client = sb.spawn(&[
        "-c",
        "-a",
        "127.0.0.1",
        "-u",
        &p,
        "-p",
        "pw",
        "-d",
        "wav:out.wav",
    ]);
    client.wait_for("connected to", SECS(10));

    // Our own authenticated session; its UDP socket proves the key with a hello.
    let Login::Confirmed {
        tcp: _own_tcp,
        keys,
        params,
    } = login_from("127.0.0.1", port, "pw", SECS(5))
    else {
        panic!("our own session was refused")
    };
    let own_udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut hello_sealer = Sealer::new(params.mode, params.session_id, &keys.client_to_server);
    let mut hello = [0u8; HEADER_LEN + TAG_LEN];
    let n = hello_sealer.seal(Kind::Hello, &[], &mut hello);
    let genuine_hello = hello[..n].to_vec();
    own_udp.send_to(&genuine_hello, target).expect("hello");
    // The server registers a session before announcing it, so the first hello is enough.

    assert!(
        received(&own_udp, Duration::from_millis(300)) > 10,
        "a socket that proved the key gets audio"
    );
    let rss_before = server.rss_kib();

    // Sockets that never prove anything; they must never hear from the server.
    let replayer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let stranger = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut sent = 0usize;
    let flood_start = Instant::now();
    for round in 0..40 {
        for _ in 0..100 {
            let len = match rng.next() % 4 {
                0 => (rng.next() % 16) as usize,            // truncated
                1 => 1_281 + (rng.next() % 8_000) as usize, // oversized
                _ => (rng.next() % 1_400) as usize,         // random
            };
            let mut junk = rng.bytes(len);
            if len >= HEADER_LEN && rng.next().is_multiple_of(2) {
                junk[0] = MAGIC; // header-shaped junk gets past the first check
                junk[1] = 2;
                junk[2] = 2;
                junk[3] = 0;
            }
            let _ = stranger.send_to(&junk, target);
            sent += 1;
        }
        // Replays of a genuine hello from another port, and forged variants of it.
        for i in 0..25 {
            let _ = replayer.send_to(&genuine_hello, target);
            let mut forged = genuine_hello.clone();
            let at = HEADER_LEN / 2 + (i + round) % (forged.len() - HEADER_LEN / 2);
            forged[at] ^= 1 << (i % 8);
            let _ = replayer.send_to(&forged, target);
            let mut next_counter = genuine_hello.clone();
            next_counter[15] = next_counter[15].wrapping_add(1 + i as u8); // a counter never sent
            let _ = stranger.send_to(&next_counter, target);
            sent += 3;
        }
        // TCP garbage, and a connection that stalls mid-identification, from 127.0.0.2.
        if round % 4 == 0 {
            for _ in 0..10 {
                if let Ok(mut t) = connect_from("127.0.0.2", port) {
                    let _ = t.write_all(&rng.bytes(200));
                }
            }
        }
        if round < 10 {
            if let Ok(mut t) = connect_from("127.0.0.2", port) {
                let _ = t.write_all(b"ECHOWARP/1.");
                std::mem::forget(t); // held open until the process ends
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "sent {sent} hostile datagrams in {:?}",
        flood_start.elapsed()
    );
    assert!(sent > 5_000);

    // A valid frame flood on the control channel must not hurt either: oversized length prefix.
    if let Ok(mut t) = connect_from("127.0.0.2", port) {
        let _ = t.write_all(Ident::ours(None).to_line().as_bytes());
        let _ = t.write_all(&[0xff, 0xff, 0, 0, 0]);
    }

    assert_eq!(
        received(&replayer, Duration::from_millis(200)),
        0,
        "the server sent UDP to a replayer"
    );
    assert_eq!(
        received(&stranger, Duration::from_millis(200)),
        0,
        "the server sent UDP to a stranger"
    );
    let rss_after = server.rss_kib();

    let c = client.wait_timeout(SECS(30));
    let s = server.wait_timeout(SECS(30));
    assert!(c.success(), "client: {c}\n{}", client.stderr());
    assert!(s.success(), "server: {s}\n{}", server.stderr());
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    let (_, got) = read_wav(&sb.path("out.wav"));
    assert_sample_exact(&want, &got);
    eprintln!("server RSS {rss_before} KiB before the flood, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 4 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}
