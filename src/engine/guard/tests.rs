use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn guard(threshold: u32) -> (Arc<Guard>, Instant) {
    let t0 = Instant::now();
    (Arc::new(Guard::new(Limits::new(threshold), t0)), t0)
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn local_networks_are_the_ones_a_passwordless_server_serves() {
    for local in [
        "127.0.0.1",
        "127.9.9.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.3.4",
        "100.64.0.1",
        "100.127.255.254",
        "::1",
        "fe80::1",
        "fd7a:115c:a1e0::1",
        "fc00::1",
        "::ffff:192.168.0.9",
    ] {
        assert!(is_local_network(ip(local)), "{local}");
    }
    for public in [
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "100.63.255.255",
        "192.169.0.1",
        "203.0.113.7",
        "2001:db8::1",
        "2a00:1450::1",
        "::ffff:8.8.8.8",
        "fec0::1",
    ] {
        assert!(!is_local_network(ip(public)), "{public}");
    }
}

#[test]
fn slots_are_limited_per_address_and_prefix_and_come_back_on_drop() {
    let (g, t0) = guard(5);
    let held: Vec<Slot> = (0..3)
        .map(|_| g.admit(ip("10.0.0.1"), t0).expect("three from one address"))
        .collect();
    assert_eq!(g.admit(ip("10.0.0.1"), t0).err(), Some(Refusal::AddrBusy));
    let more: Vec<Slot> = (2..7)
        .map(|i| {
            g.admit(ip(&format!("10.0.0.{i}")), t0)
                .expect("others in the /24")
        })
        .collect();
    assert_eq!(g.admit(ip("10.0.0.9"), t0).err(), Some(Refusal::PrefixBusy));
    assert!(
        g.admit(ip("10.0.1.9"), t0).is_ok(),
        "the next /24 is not limited"
    );
    // The mapped form of an address is the same source.
    assert_eq!(
        g.admit(ip("::ffff:10.0.0.1"), t0).err(),
        Some(Refusal::AddrBusy)
    );
    drop(held);
    drop(more);
    assert_eq!(g.tracked().0, 0, "every slot came back");
    assert!(g.admit(ip("10.0.0.1"), t0).is_ok());
    // IPv6: one /64 is one prefix.
    let v6: Vec<Slot> = (1..=8)
        .map(|i| {
            g.admit(ip(&format!("2001:db8::{i}")), t0)
                .expect("8 in a /64")
        })
        .collect();
    assert_eq!(
        g.admit(ip("2001:db8::ffff"), t0).err(),
        Some(Refusal::PrefixBusy)
    );
    assert!(g.admit(ip("2001:db8:0:1::1"), t0).is_ok());
    drop(v6);
}

#[test]
fn early_drop_spares_a_source_that_holds_nothing() {
    let (g, t0) = guard(5);
    let mut held = Vec::new();
    let mut dropped = 0;
    // 120 idle connections from 40 /24s, 3 each: some are dropped at random as slots fill.
    for n in 0..40 {
        for _ in 0..3 {
            match g.admit(ip(&format!("10.{n}.0.1")), t0) {
                Ok(s) => held.push(s),
                Err(Refusal::EarlyDrop) => dropped += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(dropped > 0 && held.len() >= 40, "{dropped} dropped");
    // A newcomer from elsewhere is never dropped at random.
    for n in 0..200 {
        let s = g.admit(ip(&format!("192.168.{n}.1")), t0);
        assert!(!matches!(s, Err(Refusal::EarlyDrop)), "{n}");
        held.extend(s.ok());
        if held.len() >= g.limits().max_pending {
            break;
        }
    }
    assert_eq!(g.admit(ip("172.16.0.1"), t0).err(), Some(Refusal::Full));
}

#[test]
fn timeouts_earn_a_growing_penalty_and_it_wears_off() {
    let (g, t0) = guard(5);
    let a = ip("10.1.1.1");
    g.timed_out(a, t0);
    assert!(g.admit(a, t0).is_ok(), "one timeout is within the grace");
    g.timed_out(a, t0);
    g.timed_out(a, t0);
    assert_eq!(g.admit(ip("10.1.1.2"), t0).err(), Some(Refusal::Penalised));
    assert!(g.admit(ip("10.1.2.1"), t0).is_ok(), "another prefix is not");
    // 2 + 4 + 8 s of penalty, less the grace of 4 s: admitted again after 10 s.
    assert_eq!(g.admit(a, t0 + S(9)).err(), Some(Refusal::Penalised));
    assert!(g.admit(a, t0 + S(11)).is_ok());
    // A persistent idler's penalty doubles up to the limit.
    for _ in 0..12 {
        g.timed_out(a, t0 + S(11));
    }
    assert_eq!(g.admit(a, t0 + S(250)).err(), Some(Refusal::Penalised));
    assert!(g.admit(a, t0 + S(320)).is_ok(), "at most penalty_max");
}

#[test]
fn guessing_from_many_addresses_gets_one_turn_a_second() {
    let (g, t0) = guard(5);
    let mut now = t0;
    let mut guesses = 0;
    let mut first_wait = None;
    // 26 addresses in 26 /24s take turns, one connection each at a time, for two minutes.
    let mut next_try = vec![t0; 26];
    while now < t0 + S(120) {
        for (n, at) in next_try.iter_mut().enumerate() {
            if *at > now {
                continue;
            }
            let a = ip(&format!("10.{n}.0.1"));
            match g.turn(a, now) {
                Ok(None) => {
                    g.failed(a, now);
                    guesses += 1;
                }
                Ok(Some(t)) => {
                    first_wait.get_or_insert(guesses);
                    *at = t;
                    g.failed(a, t);
                    guesses += 1;
                }
                Err(()) => *at = now + Duration::from_millis(100),
            }
        }
        now += Duration::from_millis(10);
    }
    // The first 20 failures are free; the 21st takes the lane's first turn at once.
    assert_eq!(first_wait, Some(21));
    // 20 free, then at most one a second (a turn may be taken at the last instant).
    // (Turns are handed out up to lane_max_wait ahead.)
    assert!(guesses <= 20 + 124, "{guesses} guesses in 120 s");
    // A client that has logged in before is not held back.
    let home = ip("192.168.1.10");
    g.succeeded(home, t0);
    assert_eq!(g.turn(home, now), Ok(None));
}

#[test]
fn a_newcomer_goes_ahead_of_guessers_in_the_lane() {
    let (g, t0) = guard(5);
    // 26 guessing /24s spend the server's budget and fill the lane.
    let mut now = t0;
    for round in 0..4 {
        for n in 0..26 {
            let a = ip(&format!("10.{n}.0.1"));
            if let Ok(t) = g.turn(a, now) {
                g.failed(a, t.unwrap_or(now));
            }
        }
        now += S(1) * round;
    }
    let guesser = ip("10.3.0.1");
    let waits = g.turn(guesser, now);
    assert!(
        matches!(waits, Err(()) | Ok(Some(_))),
        "a guesser waits: {waits:?}"
    );
    // A prefix that never failed gets the next newcomer's turn, at once; the one after it
    // a second later; the guessers' next turn moves back.
    assert_eq!(g.turn(ip("192.0.2.1"), now), Ok(None));
    assert_eq!(g.turn(ip("198.51.100.1"), now), Ok(Some(now + S(1))));
    // Once it has failed, it is a newcomer no more.
    g.failed(ip("192.0.2.1"), now);
    assert!(!matches!(g.turn(ip("192.0.2.1"), now), Ok(None)));
}

#[test]
fn one_prefix_over_its_budget_waits_longer_and_longer_and_is_banned() {
    let (g, t0) = guard(5);
    let mut now = t0;
    let mut failed_at = Vec::new();
    let mut verdict = None;
    while failed_at.len() < 20 {
        // Four addresses of one /24 take turns, as fast as the server lets them.
        let a = ip(&format!("10.7.7.{}", failed_at.len() % 4 + 1));
        match g.turn(a, now) {
            Err(()) => {
                now += Duration::from_millis(100);
                continue;
            }
            Ok(Some(t)) => now = t,
            Ok(None) => {}
        }
        failed_at.push(now);
        let v = g.failed(a, now);
        if v.ban_prefix.is_some() {
            verdict = Some(v);
            break;
        }
    }
    let gaps: Vec<Duration> = failed_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[..4].iter().all(|g| g.is_zero()), "{gaps:?}: 5 free");
    assert!(
        gaps[4..].windows(2).all(|w| w[0] < w[1]),
        "{gaps:?}: growing"
    );
    let v = verdict.expect("the prefix is banned");
    assert!(failed_at.len() <= 12, "{} failures", failed_at.len());
    assert_eq!(v.ban_prefix, Some(prefix_of(ip("10.7.7.0"))));
    assert!(!v.ban_addr, "no one address reached 5");
}

#[test]
fn an_address_is_banned_at_the_threshold_and_never_with_zero() {
    let (g, t0) = guard(2);
    let a = ip("10.0.0.1");
    assert!(!g.failed(a, t0).ban_addr);
    let v = g.failed(a, t0);
    assert!(v.ban_addr && v.count == 2);
    let (never, t0) = guard(0);
    for _ in 0..100 {
        let v = never.failed(a, t0);
        assert!(!v.ban_addr && v.ban_prefix.is_none());
    }
}

#[test]
fn memory_stays_bounded_under_many_addresses() {
    let (g, t0) = guard(5);
    for i in 0..50_000u32 {
        let a = IpAddr::from((0x0a00_0000 + i * 7).to_be_bytes());
        let now = t0 + Duration::from_millis(u64::from(i));
        drop(g.admit(a, now));
        g.failed(a, now);
        g.timed_out(a, now);
    }
    let (pending, addrs, prefixes) = g.tracked();
    assert_eq!(pending, 0);
    assert!(addrs <= 4096 && prefixes <= 4096, "{addrs} {prefixes}");
}
