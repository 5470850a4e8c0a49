//! Hostile input at a running server while a legitimate client streams: junk datagrams, forged
//! and replayed hellos, TCP garbage, connections that never finish identifying. The legitimate
//! stream must stay sample-exact, memory flat, nothing may panic, and the server must never send
//! UDP to an address that has not proved a session key.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use echowarp::protocol::datagram::{Kind, Sealer, HEADER_LEN, MAGIC};
use echowarp::protocol::frame::{encode_frame, FrameDecoder, Message, SessionParams};
use echowarp::protocol::handshake::ClientHandshake;
use echowarp::protocol::ident::Ident;
use echowarp::protocol::keys::{ControlCipher, SessionKeys, TAG_LEN};

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

/// A session of our own through the library: proves the protocol from the outside, and gives
/// us genuine datagrams to replay.
struct OwnSession {
    _tcp: TcpStream,
    params: SessionParams,
    keys: SessionKeys,
}

fn read_frame(
    tcp: &mut TcpStream,
    dec: &mut FrameDecoder,
    open: Option<&mut ControlCipher>,
) -> Message {
    let deadline = Instant::now() + SECS(5);
    loop {
        if let Some(mut body) = dec.next_frame().expect("well-formed frame") {
            if let Some(c) = open {
                c.open(&mut body).expect("genuine frame");
            }
            return Message::decode(&body).expect("known message");
        }
        assert!(Instant::now() < deadline, "no frame from the server");
        let mut buf = [0u8; 4096];
        let n = tcp.read(&mut buf).expect("read");
        assert!(n > 0, "server closed");
        dec.push(&buf[..n]);
    }
}

fn send_frame(tcp: &mut TcpStream, msg: &Message) {
    let mut body = Vec::new();
    msg.encode(&mut body);
    let mut framed = Vec::new();
    encode_frame(&body, &mut framed).expect("small frame");
    tcp.write_all(&framed).expect("write");
}

fn own_session(port: u16, password: &str) -> OwnSession {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(SECS(5))).expect("timeout");
    let ours = Ident::ours(None).to_line();
    tcp.write_all(ours.as_bytes()).expect("ident");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        tcp.read_exact(&mut b).expect("server ident");
        line.push(b[0]);
    }
    let server_line = String::from_utf8(line).expect("ascii");
    assert!(server_line.starts_with("ECHOWARP/1."), "{server_line:?}");
    let mut dec = FrameDecoder::new();
    let (mut hs, m1) = ClientHandshake::start(password, &ours, &server_line);
    send_frame(&mut tcp, &Message::Pake(m1));
    let Message::Pake(m2) = read_frame(&mut tcp, &mut dec, None) else {
        panic!("expected PAKE")
    };
    let tag = hs.handle_server_pake(&m2).expect("valid PAKE");
    send_frame(&mut tcp, &Message::Confirm(tag));
    let Message::Confirm(t) = read_frame(&mut tcp, &mut dec, None) else {
        panic!("expected confirmation")
    };
    let keys = hs.handle_server_confirm(&t).expect("same password");
    let mut open = ControlCipher::new(&keys.server_to_client.control);
    let Message::Params(params) = read_frame(&mut tcp, &mut dec, Some(&mut open)) else {
        panic!("expected params")
    };
    OwnSession {
        _tcp: tcp,
        params,
        keys,
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
    let sb = Sandbox::new();
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
    let own = own_session(port, "pw");
    let own_udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut hello_sealer = Sealer::new(
        own.params.mode,
        own.params.session_id,
        &own.keys.client_to_server,
    );
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
            if len >= HEADER_LEN && rng.next() % 2 == 0 {
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

fn connect_from(local: &str, port: u16) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let local: SocketAddr = format!("{local}:0").parse().expect("addr");
    s.bind(&local.into())?;
    let remote: SocketAddr = ([127, 0, 0, 1], port).into();
    s.connect_timeout(&remote.into(), Duration::from_secs(1))?;
    Ok(s.into())
}
