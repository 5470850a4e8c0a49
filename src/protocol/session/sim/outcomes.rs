//! Each outcome of a login and a session, through the harness.

use std::time::{Duration, Instant};

use super::{params, Pair, Policy, MS};
use crate::protocol::ident::{Ident, Status};
use crate::protocol::session::*;
use crate::protocol::Password;

#[test]
fn a_login_streams_and_heartbeats_measure_the_round_trip() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0, "hunter2", "hunter2", MS(20));
    p.run_for(Duration::from_secs(30));
    let connected_at = p
        .client_events
        .iter()
        .find_map(|(t, e)| match e {
            ClientEvent::Connected { params: got, .. } => {
                assert_eq!(*got, params());
                Some(*t)
            }
            _ => None,
        })
        .expect("connected");
    // Line out, line back, PAKE out and back, confirmation out and back with the parameters:
    // three round trips.
    assert_eq!(connected_at - t0, MS(120));
    assert!(
        p.client_end().is_none() && p.server_end().is_none(),
        "30 s of session"
    );
    let beats = |events: &[(Instant, ClientEvent)]| {
        events
            .iter()
            .filter(|(_, e)| matches!(e, ClientEvent::Heartbeat(_)))
            .count()
    };
    assert!((29..=31).contains(&beats(&p.client_events)));
    assert_eq!(
        p.client.heartbeat().and_then(|h| h.rtt()),
        Some(MS(40)),
        "the round trip is twice the one-way delay"
    );
    assert!(p.server.heartbeat().and_then(|h| h.rtt()) == Some(MS(40)));
}

#[test]
fn a_wrong_password_is_401_and_final() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0, "hunter2", "hunter3", MS(5));
    p.run_for(Duration::from_secs(10));
    let (_, why) = p.client_end().expect("ended");
    assert_eq!(*why, ClientEnd::WrongPassword);
    assert!(why.is_final());
    assert!(matches!(
        p.server_end(),
        Some((_, ServerEvent::LoginFailed(LoginFailure::WrongPassword)))
    ));
    assert!(!p.connected());
}

#[test]
fn a_banned_client_hears_403_and_stops() {
    let policy = Policy {
        refuse_at_once: Some(|| Status::Forbidden),
        ..Policy::default()
    };
    let t0 = Instant::now();
    let mut p = Pair::with(t0, "pw", "pw", MS(5), Ident::ours(None), policy);
    p.run_for(Duration::from_secs(10));
    let (at, why) = p.client_end().expect("ended");
    assert_eq!(*why, ClientEnd::Refused(Status::Forbidden));
    assert!(why.is_final());
    assert_eq!(at - t0, MS(5), "the refusal is the first thing it hears");
    assert_eq!(p.s2c.log, b"403 Forbidden (Client is banned)\n");
}

#[test]
fn a_full_server_says_503_and_the_client_may_retry() {
    let policy = Policy {
        refuse_identified: Some(|| Status::ServiceUnavailable),
        ..Policy::default()
    };
    let mut p = Pair::with(Instant::now(), "pw", "pw", MS(5), Ident::ours(None), policy);
    p.run_for(Duration::from_secs(10));
    let (_, why) = p.client_end().expect("ended");
    assert_eq!(*why, ClientEnd::Refused(Status::ServiceUnavailable));
    assert!(!why.is_final());
}

#[test]
fn another_protocol_major_is_409_both_ways() {
    let mut p = Pair::with(
        Instant::now(),
        "pw",
        "pw",
        MS(5),
        Ident::ours(Some(2)),
        Policy::default(),
    );
    p.run_for(Duration::from_secs(10));
    let (_, why) = p.client_end().expect("ended");
    let ClientEnd::Refused(status @ Status::Conflict { server, client }) = why else {
        panic!("{why:?}")
    };
    assert_eq!(
        (status.code(), server.as_str(), client.as_str()),
        (409, "1.1", "2.1")
    );
    assert!(why.is_final());
    assert!(matches!(
        p.server_end(),
        Some((_, ServerEvent::Refused(Status::Conflict { .. })))
    ));
}

#[test]
fn a_client_that_says_nothing_loses_its_slot_in_a_second() {
    let t0 = Instant::now();
    let mut server = ServerSession::new(
        Ident::ours(None),
        Password::from("pw"),
        Duration::from_secs(1),
        t0,
    );
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    server.handle_timeout(t0 + Duration::from_secs(1));
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::LoginFailed(LoginFailure::TimedOut))
    ));
    // One that starts in time but stalls has the whole handshake deadline.
    let mut server = ServerSession::new(
        Ident::ours(None),
        Password::from("pw"),
        Duration::from_secs(1),
        t0,
    );
    server.handle_input(t0 + MS(500), b"ECHOWARP/1.");
    assert_eq!(server.poll_timeout(), Some(t0 + HANDSHAKE_TIMEOUT));
    server.handle_timeout(t0 + HANDSHAKE_TIMEOUT);
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::LoginFailed(LoginFailure::TimedOut))
    ));
}

#[test]
fn a_long_or_foreign_first_line_is_400() {
    let t0 = Instant::now();
    for junk in [&[b'A'; 200][..], b"GET / HTTP/1.1\r\n"] {
        let mut server = ServerSession::new(
            Ident::ours(None),
            Password::from("pw"),
            Duration::from_secs(1),
            t0,
        );
        server.handle_input(t0, junk);
        assert!(matches!(
            server.poll_event(),
            Some(ServerEvent::Refused(Status::BadRequest))
        ));
        assert_eq!(
            server.poll_transmit().as_deref(),
            Some(&b"400 Bad Request\n"[..])
        );
        assert!(server.is_ended());
    }
}

#[test]
fn a_silent_server_times_the_client_out() {
    let t0 = Instant::now();
    let mut client = ClientSession::new(Ident::ours(None), Password::from("pw"), t0);
    assert!(client.poll_transmit().is_some(), "the client speaks first");
    client.handle_timeout(t0 + HANDSHAKE_TIMEOUT);
    let Some(ClientEvent::Ended(why)) = client.poll_event() else {
        panic!("no end")
    };
    assert!(!why.is_final(), "{why}");
    assert!(why.to_string().contains("identification"));
    // Something that is not an EchoWarp server ends it at once, for good.
    let mut client = ClientSession::new(Ident::ours(None), Password::from("pw"), t0);
    client.handle_input(t0, b"SSH-2.0-OpenSSH_9.2\r\n");
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Ended(ClientEnd::NotEchoWarp(_)))
    ));
}

#[test]
fn a_server_that_stalls_after_confirming_may_be_retried() {
    // The server's driver stalls after authentication: the client holds a proven server's
    // confirmation but no parameters, and may try again.
    let policy = Policy {
        hold_after_auth: true,
        ..Policy::default()
    };
    let t0 = Instant::now();
    let mut p = Pair::with(t0, "pw", "pw", MS(5), Ident::ours(None), policy);
    p.run_for(Duration::from_secs(10));
    let (at, why) = p.client_end().expect("ended");
    assert_eq!(at - t0, HANDSHAKE_TIMEOUT);
    assert!(!why.is_final(), "{why}");
}

/// Everything `from` has to send, delivered to `to` at once.
fn deliver(from: &mut dyn Session, to: &mut dyn Session, now: Instant) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(b) = from.poll_transmit() {
        to.handle_input(now, &b);
        all.extend(b);
    }
    all
}

#[test]
fn the_client_never_retries_once_its_confirmation_is_out() {
    let t0 = Instant::now();
    let new_pair = || {
        let c = ClientSession::new(Ident::ours(None), Password::from("pw"), t0);
        let s = ServerSession::new(
            Ident::ours(None),
            Password::from("pw"),
            Duration::from_secs(1),
            t0,
        );
        (c, s)
    };
    // A rogue server: after the client's confirmation it is silent, closes, or sends
    // anything but its own confirmation (here its PAKE message again).
    for ending in 0..3 {
        let (mut c, mut s) = new_pair();
        let mut sink = ClientSession::new(Ident::ours(None), Password::from("x"), t0);
        deliver(&mut c, &mut s, t0); // our line
        s.accept(t0, None);
        deliver(&mut s, &mut c, t0); // its line
        deliver(&mut c, &mut s, t0); // our PAKE
        let pake = deliver(&mut s, &mut c, t0); // its PAKE
        deliver(&mut c, &mut s, t0); // our confirmation
        let confirm = deliver(&mut s, &mut sink, t0); // its confirmation, withheld
        assert!(!confirm.is_empty(), "the genuine server confirms");
        match ending {
            0 => c.handle_timeout(t0 + HANDSHAKE_TIMEOUT),
            1 => c.handle_closed(t0, None),
            _ => c.handle_input(t0, &pake),
        }
        let Some(ClientEvent::Ended(why)) = c.poll_event() else {
            panic!("no end for case {ending}")
        };
        assert!(matches!(why, ClientEnd::NotConfirmed(_)), "{why:?}");
        assert!(why.is_final());
    }
    // Before its confirmation is out, a lost connection is retried.
    let (mut c, mut s) = new_pair();
    deliver(&mut c, &mut s, t0);
    s.accept(t0, None);
    deliver(&mut s, &mut c, t0);
    c.handle_closed(t0, None);
    let Some(ClientEvent::Ended(why)) = c.poll_event() else {
        panic!("no end")
    };
    assert!(!why.is_final(), "{why:?}");
}

#[test]
fn a_stall_shorter_than_the_timeout_is_survived_a_longer_one_ends_both_sides() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0, "pw", "pw", MS(10));
    p.run_for(Duration::from_secs(3));
    assert!(p.connected());
    // Both directions stall for 4 s: heartbeats queue, then arrive; nobody gives up.
    let resume = p.now + Duration::from_secs(4);
    p.c2s.stalled_until = Some(resume);
    p.s2c.stalled_until = Some(resume);
    p.run_for(Duration::from_secs(10));
    assert!(p.client_end().is_none() && p.server_end().is_none());
    // Now a dead path: 5 s of silence ends each side on its own.
    let cut = p.now;
    p.c2s.stalled_until = Some(cut + Duration::from_secs(3600));
    p.s2c.stalled_until = Some(cut + Duration::from_secs(3600));
    p.run_for(Duration::from_secs(10));
    let (c_at, why) = p.client_end().expect("client ended");
    assert!(!why.is_final(), "a lost session is retried: {why}");
    assert!(why.to_string().contains("silent"), "{why}");
    let (s_at, ev) = p.server_end().expect("server ended");
    assert!(matches!(ev, ServerEvent::Ended(ServerEnd::Silent)));
    for at in [c_at, s_at] {
        let after = at - cut;
        assert!(after > MS(4_000) && after <= PEER_TIMEOUT, "{after:?}");
    }
}

#[test]
fn goodbyes_end_both_sides_with_their_reasons() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0, "pw", "pw", MS(10));
    p.run_for(Duration::from_secs(2));
    p.client.close();
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.client_end().map(|(_, w)| w), Some(&ClientEnd::Stopped));
    assert!(matches!(
        p.server_end(),
        Some((_, ServerEvent::Ended(ServerEnd::SaidGoodbye)))
    ));

    let mut p = Pair::new(t0, "pw", "pw", MS(10));
    p.run_for(Duration::from_secs(2));
    p.server.shutdown();
    p.run_for(Duration::from_secs(1));
    let (_, why) = p.client_end().expect("ended");
    assert_eq!(*why, ClientEnd::ServerStopped);
    assert!(!why.is_final(), "a stopped server may come back");
}

#[test]
fn end_of_stream_outlives_the_connection_on_the_client() {
    let t0 = Instant::now();
    let mut p = Pair::new(t0, "pw", "pw", MS(10));
    p.run_for(Duration::from_secs(2));
    p.server.end_of_stream(96_000, p.now);
    p.run_for(Duration::from_secs(1));
    assert!(p.client_events.iter().any(|(_, e)| matches!(
        e,
        ClientEvent::EndOfStream {
            end_position: 96_000
        }
    )));
    // The client plays out longer than the server waits: the server ends on its grace, the
    // client's session stays (its driver ends it when the play-out is done), through the close
    // and past any silence.
    p.run_for(END_OF_STREAM_GRACE + Duration::from_secs(10));
    assert!(matches!(
        p.server_end(),
        Some((_, ServerEvent::Ended(ServerEnd::EndOfStream)))
    ));
    assert!(p.client_end().is_none(), "{:?}", p.client_end());
    // A client that finishes first closes; the server ends at once.
    let mut p = Pair::new(t0, "pw", "pw", MS(10));
    p.run_for(Duration::from_secs(2));
    p.server.end_of_stream(96_000, p.now);
    p.run_for(Duration::from_secs(1));
    let closed = p.now;
    p.c2s.close(closed);
    p.run_for(Duration::from_secs(1));
    let (at, ev) = p.server_end().expect("ended");
    assert!(matches!(ev, ServerEvent::Ended(ServerEnd::EndOfStream)));
    assert_eq!(at - closed, MS(10));
}

#[test]
fn reconnection_backs_off_until_the_server_has_room() {
    // The server is full for its first three answers; the client's driver retries on the
    // backoff schedule and gets in on the fourth attempt.
    let t0 = Instant::now();
    let mut backoff = Backoff::new(0);
    let mut now = t0;
    let mut attempts = Vec::new();
    loop {
        let n = backoff.attempt();
        attempts.push(now - t0);
        let policy = Policy {
            refuse_identified: (n <= 3)
                .then_some((|| Status::ServiceUnavailable) as fn() -> Status),
            ..Policy::default()
        };
        let mut p = Pair::with(now, "pw", "pw", MS(10), Ident::ours(None), policy);
        p.run_for(Duration::from_secs(1));
        if p.connected() {
            backoff.connected();
            break;
        }
        let (at, why) = p.client_end().expect("refused");
        assert!(!why.is_final());
        now = at + backoff.next_delay();
    }
    // Each refusal takes one round trip (20 ms); the pauses are 0.5, 1 and 2 s.
    assert_eq!(attempts, [MS(0), MS(520), MS(1540), MS(3560)]);
}

#[test]
fn no_byte_on_the_wire_carries_the_password() {
    let pw = "correct horse battery staple";
    for server_pw in [pw, "another password entirely"] {
        let mut p = Pair::new(Instant::now(), pw, server_pw, MS(1));
        p.run_for(Duration::from_secs(5));
        for log in [&p.c2s.log, &p.s2c.log] {
            assert!(log.len() > 50);
            assert!(
                !log.windows(4)
                    .any(|w| pw.as_bytes().windows(4).any(|q| q == w)),
                "four bytes of the password went on the wire"
            );
        }
    }
}

#[test]
fn anchors_reach_clients_of_protocol_1_1_only() {
    let t0 = Instant::now();
    for (minor, expect) in [(1, true), (0, false)] {
        let ident = Ident::ours(None).claiming_minor(Some(minor));
        let mut p = Pair::with(t0, "pw", "pw", MS(1), ident, Policy::default());
        p.server.set_anchor(Some((4_800, t0)));
        p.run_for(Duration::from_secs(3));
        let anchored = p.client_events.iter().any(|(_, e)| {
            matches!(e, ClientEvent::Heartbeat(h) if h.anchor.is_some_and(|a| a.position == 4_800))
        });
        assert_eq!(anchored, expect, "minor {minor}");
    }
}
