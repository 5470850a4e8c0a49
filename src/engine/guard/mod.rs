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
mod tests;
