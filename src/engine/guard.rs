//! The server's policy before authentication (DESIGN.md §3.4): who may open a handshake, how
//! long it may take, and how fast anyone may guess the password. Pure logic over an injected
//! clock, so that every rule is tested without sockets; the server calls it from its accept
//! loop and its connection threads.
//!
//! The models are OpenSSH's `MaxStartups` (random early drop as pre-auth slots fill),
//! `LoginGraceTime` and `PerSourcePenalties` (sources that keep timing out are refused for a
//! growing while), and fail2ban (bans by address, and by prefix for guessing that rotates
//! addresses). Sources are an address and its prefix: IPv4 /24, IPv6 /64.
//!
//! Guessing is slowed by a *slow lane*. Once a prefix has spent its failure budget, or the whole
//! server has, every handshake from a source that has not logged in before waits for its turn
//! before the server answers its identification: one turn a second for the whole server, and,
//! for a prefix over its budget, a delay that doubles with every further failure. The wait comes
//! before any answer, so a guesser cannot tell a right guess by a quicker reply; and since turns
//! are shared, many addresses guess no faster than one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::store::bans::{canonical, prefix_of};

/// Whether `ip` is on a local network, where a server without a password serves anonymous
/// clients: loopback, private (RFC 1918), link-local, CGNAT (100.64.0.0/10, which tailnets
/// use) and IPv6 unique-local (fc00::/7).
pub(crate) fn is_local_network(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && b & 0xc0 == 64)
        }
        IpAddr::V6(v6) => {
            // fe80::/10 link-local, fc00::/7 unique-local.
            let first = v6.segments()[0];
            v6.is_loopback() || first & 0xffc0 == 0xfe80 || first & 0xfe00 == 0xfc00
        }
    }
}

/// The limits in force. [`Limits::default`] holds the server's; tests shrink them.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Pre-auth connections at once, in all.
    pub(crate) max_pending: usize,
    /// From this many, a source that already holds a slot may be dropped at random, more
    /// often the fuller it gets (always at `max_pending`). A source that holds none is never.
    pub(crate) early_drop_from: usize,
    /// Pre-auth connections at once from one address.
    pub(crate) per_addr: usize,
    /// Pre-auth connections at once from one prefix.
    pub(crate) per_prefix: usize,
    /// The first bytes of the identification line must come within this of the connection.
    pub(crate) first_bytes: Duration,
    /// Failures a prefix may have before its handshakes take the slow lane.
    pub(crate) prefix_free: f64,
    /// Failures the server may have before every source not known to it takes the slow lane.
    pub(crate) server_free: f64,
    /// One of a prefix's failures is forgotten this often.
    pub(crate) prefix_forgive: Duration,
    /// One of the server's failures is forgotten this often.
    pub(crate) server_forgive: Duration,
    /// One slow-lane turn per this, for the whole server.
    pub(crate) lane_interval: Duration,
    /// A turn further away than this is refused (503) instead of waited for.
    pub(crate) lane_max_wait: Duration,
    /// The longest delay a prefix over its budget waits between turns.
    pub(crate) prefix_delay_max: Duration,
    /// A timed-out handshake costs its prefix this penalty, doubled for each recent one.
    pub(crate) penalty_unit: Duration,
    /// The longest penalty.
    pub(crate) penalty_max: Duration,
    /// Penalties up to this are tolerated (a slow link times out now and then).
    pub(crate) penalty_grace: Duration,
    /// Failures from one address before it is banned (0: no bans).
    pub(crate) ban_threshold: u32,
    /// A prefix is banned as a whole once this many of its addresses have failed and it has
    /// failed twice the threshold in all.
    pub(crate) prefix_ban_addrs: usize,
    /// A prefix's failures toward its ban (and toward being a newcomer again) are forgotten
    /// one per this long.
    pub(crate) prefix_ban_forgive: Duration,
    /// Addresses (and, separately, prefixes) remembered at most; the idle oldest go first.
    pub(crate) max_tracked: usize,
    /// An address that logged in skips the slow lane and penalties for this long.
    pub(crate) trust_for: Duration,
}

impl Limits {
    /// The server's limits, with `ban_threshold` failures per address before a ban.
    pub(crate) fn new(ban_threshold: u32) -> Self {
        Self {
            max_pending: 128,
            early_drop_from: 32,
            per_addr: 3,
            per_prefix: 8,
            first_bytes: Duration::from_secs(1),
            prefix_free: 5.0,
            server_free: 20.0,
            prefix_forgive: Duration::from_secs(60),
            server_forgive: Duration::from_secs(6),
            lane_interval: Duration::from_secs(1),
            lane_max_wait: Duration::from_secs(3),
            prefix_delay_max: Duration::from_secs(60),
            penalty_unit: Duration::from_secs(2),
            penalty_max: Duration::from_secs(300),
            penalty_grace: Duration::from_secs(4),
            ban_threshold,
            prefix_ban_addrs: 3,
            prefix_ban_forgive: Duration::from_secs(600),
            max_tracked: 4096,
            trust_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its prefix is serving a penalty for timed-out handshakes.
    Penalised,
    /// Every pre-auth slot is taken.
    Full,
    /// Its address holds all the slots one address may.
    AddrBusy,
    /// Its prefix holds all the slots one prefix may.
    PrefixBusy,
    /// Dropped at random, as slots fill.
    EarlyDrop,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Penalised => "its prefix is penalised for timed-out handshakes",
            Refusal::Full => "every pre-auth slot is taken",
            Refusal::AddrBusy => "its address holds all the slots one address may",
            Refusal::PrefixBusy => "its prefix holds all the slots one prefix may",
            Refusal::EarlyDrop => "random early drop",
        })
    }
}

/// What a failed login leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Failures from this address so far.
    pub(crate) count: u32,
    /// Ban the address.
    pub(crate) ban_addr: bool,
    /// Ban its whole prefix.
    pub(crate) ban_prefix: Option<IpNet>,
}

/// A count that leaks away: one unit per `forgive`. `spent` turns on at the budget and off
/// again below half of it, so that a guesser cannot slip a free guess in each time one unit
/// has leaked.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
    spent: bool,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            level: 0.0,
            at: now,
            spent: false,
        }
    }

    fn level(&mut self, now: Instant, forgive: Duration, free: f64) -> f64 {
        let leaked =
            now.saturating_duration_since(self.at).as_secs_f64() / forgive.as_secs_f64().max(1e-3);
        self.level = (self.level - leaked).max(0.0);
        self.at = now.max(self.at);
        if self.level >= free {
            self.spent = true;
        } else if self.level < free / 2.0 {
            self.spent = false;
        }
        self.level
    }

    fn add(&mut self, now: Instant, forgive: Duration, free: f64) -> f64 {
        self.level(now, forgive, free);
        self.level += 1.0;
        self.level(now, forgive, free)
    }

    fn spent(&mut self, now: Instant, forgive: Duration, free: f64) -> bool {
        self.level(now, forgive, free);
        self.spent
    }
}

#[derive(Debug)]
struct AddrState {
    pending: usize,
    failures: u32,
    last: Instant,
}

#[derive(Debug)]
struct PrefixState {
    pending: usize,
    failures: Bucket,
    /// Addresses of this prefix that failed (a few suffice to see rotation).
    failing: Vec<IpAddr>,
    /// Failures for the prefix ban, forgotten far more slowly (one per 10 minutes).
    ban_score: Bucket,
    /// Its next slow-lane turn, at the earliest.
    next_turn: Instant,
    /// Recent timeouts (leaking one a minute), which make the next penalty longer.
    strikes: Bucket,
    penalty_until: Instant,
    last: Instant,
}

impl PrefixState {
    fn new(now: Instant) -> Self {
        Self {
            pending: 0,
            failures: Bucket::new(now),
            failing: Vec::new(),
            ban_score: Bucket::new(now),
            next_turn: now,
            strikes: Bucket::new(now),
            penalty_until: now,
            last: now,
        }
    }
}

#[derive(Debug)]
struct State {
    addrs: HashMap<IpAddr, AddrState>,
    prefixes: HashMap<IpNet, PrefixState>,
    trusted: HashMap<IpAddr, Instant>,
    pending: usize,
    server: Bucket,
    lane_next: Instant,
    /// The next turn of a prefix that has not failed of late.
    clean_next: Instant,
    rng: u64,
}

/// Forgets the idle entries seen longest ago once `map` holds more than `max`, down to 7/8 of
/// it (so that the sort is paid once per `max / 8` new entries).
fn trim<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    idle_since: impl Fn(&V) -> Option<Instant>,
) {
    if map.len() <= max {
        return;
    }
    let mut idle: Vec<(Instant, K)> = map
        .iter()
        .filter_map(|(k, v)| idle_since(v).map(|t| (t, *k)))
        .collect();
    idle.sort_unstable_by_key(|&(t, _)| t);
    let excess = map.len() - max * 7 / 8;
    for (_, k) in idle.into_iter().take(excess) {
        map.remove(&k);
    }
}

/// Keeps the tables within `max` entries each.
fn bound(st: &mut State, max: usize) {
    trim(&mut st.addrs, max, |a| (a.pending == 0).then_some(a.last));
    trim(&mut st.prefixes, max, |p| {
        (p.pending == 0).then_some(p.last)
    });
}

/// The policy, shared by the accept loop and the connection threads.
#[derive(Debug)]
pub(crate) struct Guard {
    limits: Limits,
    state: Mutex<State>,
}

/// A pre-auth slot, released when dropped (or at [`Slot::release`], once authenticated).
#[derive(Debug)]
pub(crate) struct Slot {
    guard: Arc<Guard>,
    ip: IpAddr,
    held: bool,
}

impl Slot {
    /// Gives the slot back.
    pub(crate) fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.guard.release(self.ip);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

impl Guard {
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        let mut seed = [0u8; 8];
        // Early drop only needs to be unpredictable enough to be unfair to no one source.
        let _ = getrandom::fill(&mut seed);
        Self {
            limits,
            state: Mutex::new(State {
                addrs: HashMap::new(),
                prefixes: HashMap::new(),
                trusted: HashMap::new(),
                pending: 0,
                server: Bucket::new(now),
                lane_next: now,
                clean_next: now,
                rng: u64::from_le_bytes(seed) | 1,
            }),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere leaves nothing half-done worth refusing over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_trusted(&self, st: &State, ip: IpAddr, now: Instant) -> bool {
        st.trusted
            .get(&ip)
            .is_some_and(|&t| now.saturating_duration_since(t) < self.limits.trust_for)
    }

    /// A new connection from `ip`: a pre-auth slot, or why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, Refusal> {
        let l = &self.limits;
        let ip = canonical(ip);
        let prefix = prefix_of(ip);
        let mut st = self.state();
        let trusted = self.is_trusted(&st, ip, now);
        let (addr_pending, prefix_pending, penalised) = {
            let a = st.addrs.get(&ip).map_or(0, |a| a.pending);
            let p = st.prefixes.get(&prefix);
            let penalised = p.is_some_and(|p| p.penalty_until > now + l.penalty_grace);
            (a, p.map_or(0, |p| p.pending), penalised)
        };
        if penalised && !trusted {
            return Err(Refusal::Penalised);
        }
        if st.pending >= l.max_pending {
            return Err(Refusal::Full);
        }
        if addr_pending >= l.per_addr {
            return Err(Refusal::AddrBusy);
        }
        if prefix_pending >= l.per_prefix && !trusted {
            return Err(Refusal::PrefixBusy);
        }
        if prefix_pending > 0 && st.pending >= l.early_drop_from {
            // 30 % at the first mark, rising to all at the last.
            let span = (l.max_pending - l.early_drop_from).max(1) as f64;
            let p = 0.3 + 0.7 * (st.pending - l.early_drop_from) as f64 / span;
            st.rng ^= st.rng << 13;
            st.rng ^= st.rng >> 7;
            st.rng ^= st.rng << 17;
            if (st.rng >> 11) as f64 / (1u64 << 53) as f64 <= p {
                return Err(Refusal::EarlyDrop);
            }
        }
        st.pending += 1;
        let a = st.addrs.entry(ip).or_insert(AddrState {
            pending: 0,
            failures: 0,
            last: now,
        });
        a.pending += 1;
        a.last = now;
        let p = st
            .prefixes
            .entry(prefix)
            .or_insert_with(|| PrefixState::new(now));
        p.pending += 1;
        p.last = now;
        bound(&mut st, l.max_tracked);
        Ok(Slot {
            guard: self.clone(),
            ip,
            held: true,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut st = self.state();
        st.pending = st.pending.saturating_sub(1);
        if let Some(a) = st.addrs.get_mut(&ip) {
            a.pending = a.pending.saturating_sub(1);
        }
        if let Some(p) = st.prefixes.get_mut(&prefix_of(ip)) {
            p.pending = p.pending.saturating_sub(1);
        }
    }

    /// A handshake from `ip` ran out of time (sent nothing, trickled, or stalled): its prefix
    /// serves a penalty that doubles with each recent timeout.
    pub(crate) fn timed_out(&self, ip: IpAddr, now: Instant) {
        let l = &self.limits;
        let ip = canonical(ip);
        let mut st = self.state();
        if self.is_trusted(&st, ip, now) {
            return;
        }
        let p = st
            .prefixes
            .entry(prefix_of(ip))
            .or_insert_with(|| PrefixState::new(now));
        let strikes = p.strikes.add(now, Duration::from_secs(60), f64::MAX);
        let factor = 2f64.powf((strikes - 1.0).clamp(0.0, 16.0));
        let add = l.penalty_unit.mul_f64(factor);
        let from = p.penalty_until.max(now);
        p.penalty_until = (from + add).min(now + l.penalty_max);
        p.last = now;
        bound(&mut st, l.max_tracked);
    }

    /// `ip` has identified itself: `Ok(None)` to go on at once, `Ok(Some(t))` to wait until
    /// `t` first (its slow-lane turn), `Err(())` to refuse it for now (503): the next turn is
    /// too far away.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn turn(&self, ip: IpAddr, now: Instant) -> Result<Option<Instant>, ()> {
        let l = &self.limits;
        let ip = canonical(ip);
        let mut st = self.state();
        if self.is_trusted(&st, ip, now) {
            return Ok(None);
        }
        let server_spent = st.server.spent(now, l.server_forgive, l.server_free);
        let lane_next = st.lane_next;
        let p = st
            .prefixes
            .entry(prefix_of(ip))
            .or_insert_with(|| PrefixState::new(now));
        let prefix_spent = p.failures.spent(now, l.prefix_forgive, l.prefix_free);
        if !server_spent && !prefix_spent {
            return Ok(None);
        }
        if p.ban_score.level(now, l.prefix_ban_forgive, f64::MAX) <= 0.0 {
            // A prefix that has not failed of late (a newcomer, not a guesser) goes ahead of
            // those that have: turns of its own, one a second, each of which moves the shared
            // lane back by as much, so that both together still give about one a second. A
            // guessing prefix is clean once, then waits in the lane like the rest.
            let at = now.max(st.clean_next);
            if at > now + l.lane_max_wait {
                return Err(());
            }
            st.clean_next = at + l.lane_interval;
            st.lane_next = st.lane_next.max(now) + l.lane_interval;
            return Ok((at > now).then_some(at));
        }
        let at = now.max(lane_next).max(p.next_turn);
        if at > now + l.lane_max_wait {
            return Err(());
        }
        if prefix_spent {
            let over = (p.failures.level - l.prefix_free).max(0.0);
            let delay = l.lane_interval.mul_f64(2f64.powf(over.min(16.0)));
            p.next_turn = at + delay.min(l.prefix_delay_max);
        }
        st.lane_next = at + l.lane_interval;
        Ok((at > now).then_some(at))
    }

    /// A login from `ip` failed (a wrong password, a malformed handshake, a bad line).
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> Verdict {
        let l = &self.limits;
        let ip = canonical(ip);
        let prefix = prefix_of(ip);
        let mut st = self.state();
        st.server.add(now, l.server_forgive, l.server_free);
        let a = st.addrs.entry(ip).or_insert(AddrState {
            pending: 0,
            failures: 0,
            last: now,
        });
        a.failures = a.failures.saturating_add(1);
        a.last = now;
        let count = a.failures;
        let ban_addr = l.ban_threshold != 0 && count >= l.ban_threshold;
        if ban_addr {
            a.failures = 0;
        }
        let p = st
            .prefixes
            .entry(prefix)
            .or_insert_with(|| PrefixState::new(now));
        p.failures.add(now, l.prefix_forgive, l.prefix_free);
        let score = p.ban_score.add(now, l.prefix_ban_forgive, f64::MAX);
        if !p.failing.contains(&ip) && p.failing.len() < 8 {
            p.failing.push(ip);
        }
        p.last = now;
        let ban_prefix = (l.ban_threshold != 0
            && p.failing.len() >= l.prefix_ban_addrs
            && score.round() >= 2.0 * f64::from(l.ban_threshold))
        .then_some(prefix);
        if ban_prefix.is_some() {
            p.failing.clear();
            p.ban_score = Bucket::new(now);
        }
        bound(&mut st, l.max_tracked);
        Verdict {
            count,
            ban_addr,
            ban_prefix,
        }
    }

    /// A login from `ip` succeeded: its failures are forgotten, and it skips the slow lane and
    /// penalties from now on (for [`Limits::trust_for`]).
    pub(crate) fn succeeded(&self, ip: IpAddr, now: Instant) {
        let ip = canonical(ip);
        let mut st = self.state();
        if let Some(a) = st.addrs.get_mut(&ip) {
            a.failures = 0;
        }
        st.trusted.insert(ip, now);
        let max = self.limits.max_tracked;
        trim(&mut st.trusted, max / 4, |&t| Some(t));
    }

    /// Pre-auth connections held now, and the addresses and prefixes remembered.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> (usize, usize, usize) {
        let st = self.state();
        (st.pending, st.addrs.len(), st.prefixes.len())
    }
}

#[cfg(test)]
mod tests {
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
}
