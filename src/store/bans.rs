//! The ban list: one IP per line in `echowarp_ban_list.txt`, as in EchoWarp 0.4, and, beside
//! them, whole networks written as `a.b.c.0/24` or `2001:db8::/64` (the server bans a prefix
//! that guesses from many addresses; EchoWarp 0.4 skips such lines).
//!
//! The server re-reads the file when it changes on disk (an edit by hand takes effect at the next
//! connection attempt). The list is bounded ([`MAX_BANS`]: the oldest ban goes first). Reading
//! never loses the list to one bad line or byte: what cannot be read is skipped and reported.
//! The server writes it off its connection path ([`BanList::pending_write`]); the command line
//! and the tray write it at once.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;

use super::atomic::write_atomic;
use super::StoreError;

/// The most entries the list holds (at most 44 bytes a line: under 1 MiB on disk).
pub const MAX_BANS: usize = 16_384;
/// Bad lines reported one by one when reading; the rest are counted.
const REPORTED_LINES: usize = 5;

/// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; bans are kept in plain form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The network `ip` is in that a server treats as one source beyond the address: its IPv4 /24
/// or IPv6 /64.
pub fn prefix_of(ip: IpAddr) -> IpNet {
    let ip = canonical(ip);
    let len = if ip.is_ipv4() { 24 } else { 64 };
    // Both lengths are valid for their family.
    IpNet::new(ip, len).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
}

/// One address as a network of one (/32 or /128).
fn host(ip: IpAddr) -> IpNet {
    IpNet::from(canonical(ip))
}

/// A line's entry: an address, or a network in CIDR form (its host bits cleared).
fn parse_entry(text: &str) -> Option<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(host(ip));
    }
    let net = text.parse::<IpNet>().ok()?;
    let addr = canonical(net.addr());
    // A mapped IPv4 network (`::ffff:10.0.0.0/120`) is kept as the IPv4 one.
    let len = match (net.addr(), addr) {
        (IpAddr::V6(_), IpAddr::V4(_)) => net.prefix_len().checked_sub(96)?,
        _ => net.prefix_len(),
    };
    IpNet::new(addr, len).ok().map(|n| n.trunc())
}

/// How an entry is written: an address alone as EchoWarp 0.4 wrote it, a network in CIDR form.
/// An entry as the ban list file and the menus show it: an address plain, a network as CIDR.
pub fn entry_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The persistent ban list.
#[derive(Debug)]
pub struct BanList {
    path: PathBuf,
    /// Oldest first, as in the file.
    order: VecDeque<IpNet>,
    set: HashSet<IpNet>,
    /// The prefix lengths in use, per family (false: IPv4), for lookups.
    lens: BTreeSet<(bool, u8)>,
    stamp: Option<(SystemTime, u64)>,
    /// Changes made; `saved`: changes on disk (or handed to a writer).
    generation: u64,
    saved: u64,
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// What reading a ban list found.
#[derive(Debug, Default)]
struct Parsed {
    entries: Vec<IpNet>,
    /// (1-based line, why) of lines skipped.
    skipped: Vec<(usize, String)>,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(raw) else {
            out.skipped.push((n + 1, "not UTF-8 text".into()));
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_entry(line) {
            Some(e) if seen.insert(e) => out.entries.push(e),
            Some(_) => {}
            None => {
                let shown: String = line.chars().take(48).filter(|c| !c.is_control()).collect();
                out.skipped
                    .push((n + 1, format!("not an IP address or network: {shown:?}")));
            }
        }
    }
    // Bounded: the newest (last) entries are kept.
    if out.entries.len() > MAX_BANS {
        let extra = out.entries.len() - MAX_BANS;
        out.entries.drain(..extra);
        out.skipped.push((
            0,
            format!("{extra} oldest entries beyond the limit of {MAX_BANS}"),
        ));
    }
    out
}

impl BanList {
    /// Loads the list at `path`; a missing file is an empty list. Lines that are neither
    /// addresses nor networks (comments, blanks, typos, bytes that are not text) are skipped
    /// with a warning.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file exists but cannot be read.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let mut list = Self {
            path: path.to_owned(),
            order: VecDeque::new(),
            set: HashSet::new(),
            lens: BTreeSet::new(),
            stamp: None,
            generation: 0,
            saved: 0,
        };
        list.read()?;
        Ok(list)
    }

    /// Reads the file; on an error the list in memory stays as it was.
    fn read(&mut self) -> Result<(), StoreError> {
        let stamp = stamp_of(&self.path);
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(&self.path)(e)),
        };
        let parsed = parse(&bytes);
        for (line, why) in parsed.skipped.iter().take(REPORTED_LINES) {
            tracing::warn!("{}:{line}: skipped: {why}", self.path.display());
        }
        if parsed.skipped.len() > REPORTED_LINES {
            tracing::warn!(
                "{}: {} more lines skipped",
                self.path.display(),
                parsed.skipped.len() - REPORTED_LINES
            );
        }
        self.order.clear();
        self.set.clear();
        self.lens.clear();
        for e in parsed.entries {
            self.insert(e);
        }
        self.stamp = stamp;
        Ok(())
    }

    fn insert(&mut self, e: IpNet) -> bool {
        if !self.set.insert(e) {
            return false;
        }
        self.lens.insert((e.addr().is_ipv6(), e.prefix_len()));
        self.order.push_back(e);
        while self.order.len() > MAX_BANS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn take_out(&mut self, e: &IpNet) -> bool {
        if !self.set.remove(e) {
            return false;
        }
        self.order.retain(|x| x != e);
        self.lens = self
            .order
            .iter()
            .map(|n| (n.addr().is_ipv6(), n.prefix_len()))
            .collect();
        true
    }

    /// Re-reads the file if it changed on disk since the last read or write. While a change of
    /// ours waits to be written, the file is not the truth and is left alone.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it cannot be read (the list in memory is kept).
    pub fn refresh(&mut self) -> Result<(), StoreError> {
        if self.saved == self.generation && stamp_of(&self.path) != self.stamp {
            self.read()?;
        }
        Ok(())
    }

    /// The file's text for the list as it is now.
    fn text(&self) -> String {
        let mut text = String::with_capacity(self.order.len() * 16);
        for e in &self.order {
            text.push_str(&entry_text(e));
            text.push('\n');
        }
        text
    }

    fn save(&mut self) -> Result<(), StoreError> {
        write_atomic(&self.path, self.text().as_bytes(), false)?;
        self.stamp = stamp_of(&self.path);
        self.saved = self.generation;
        Ok(())
    }

    /// A change not yet written: its generation and the file's text, for a writer thread that
    /// writes it with [`write_atomic`] (no lock held) and then calls [`BanList::wrote`].
    pub fn pending_write(&self) -> Option<(u64, String)> {
        (self.saved != self.generation).then(|| (self.generation, self.text()))
    }

    /// The writer has written generation `generation`.
    pub fn wrote(&mut self, generation: u64) {
        if generation == self.generation {
            self.saved = generation;
            self.stamp = stamp_of(&self.path);
        }
    }

    /// Whether `ip` is banned, alone or by a network it is in.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.lens
            .iter()
            .filter(|(v6, _)| *v6 == ip.is_ipv6())
            .filter_map(|&(_, len)| IpNet::new(ip, len).ok())
            .any(|n| self.set.contains(&n.trunc()))
    }

    /// Bans `ip` in memory; returns false if it was already banned. The change waits for
    /// [`BanList::pending_write`].
    pub fn ban_deferred(&mut self, entry: IpNet) -> bool {
        let changed = self.insert(entry);
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Bans `ip` and saves; returns false if it was already banned.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn add(&mut self, ip: IpAddr) -> Result<bool, StoreError> {
        if !self.ban_deferred(host(ip)) {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Lifts a ban and saves; returns false if `ip` was not banned.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn remove(&mut self, ip: IpAddr) -> Result<bool, StoreError> {
        self.remove_entry(&host(ip))
    }

    /// Lifts the ban of an address or a network (as written in the list) and saves; returns
    /// false if it was not in the list.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn remove_entry(&mut self, entry: &IpNet) -> Result<bool, StoreError> {
        if !self.take_out(&entry.trunc()) {
            return Ok(false);
        }
        self.generation += 1;
        self.save().map(|()| true)
    }

    /// Lifts every ban and saves; returns how many there were.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn clear(&mut self) -> Result<usize, StoreError> {
        let n = self.order.len();
        self.order.clear();
        self.set.clear();
        self.lens.clear();
        self.generation += 1;
        self.save().map(|()| n)
    }

    /// The banned addresses (not networks), oldest first.
    pub fn list(&self) -> Vec<IpAddr> {
        self.order
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(IpNet::addr)
            .collect()
    }

    /// Every entry, addresses (as /32 or /128) and networks, oldest first.
    pub fn nets(&self) -> Vec<IpNet> {
        self.order.iter().copied().collect()
    }

    /// Every entry, addresses and networks, oldest first, as written in the file.
    pub fn entries(&self) -> Vec<String> {
        self.order.iter().map(entry_text).collect()
    }

    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses an address or a network as `--unban` takes it.
///
/// # Errors
/// A message when `text` is neither.
pub fn parse_ban_entry(text: &str) -> Result<IpNet, String> {
    parse_entry(text.trim()).ok_or_else(|| format!("{text:?} is not an IP address or network"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_picks_up_edits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("echowarp_ban_list.txt");
        let mut list = BanList::load(&path).expect("missing file is empty");
        let v4: IpAddr = "10.1.2.3".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert!(list.add(mapped).expect("saved"));
        assert!(
            list.contains(v4),
            "mapped and plain forms are the same client"
        );
        assert_eq!(fs::read_to_string(&path).expect("read"), "10.1.2.3\n");
        assert!(BanList::load(&path).expect("reload").contains(v4));
        fs::write(&path, "# edited by hand\n10.1.2.3\n::1\nnot-an-ip\n").expect("edit");
        list.refresh().expect("refresh");
        assert_eq!(list.list().len(), 2);
        assert!(list.remove("::1".parse().expect("ip")).expect("saved"));
        assert_eq!(list.clear().expect("saved"), 1);
        assert!(BanList::load(&path).expect("reload").list().is_empty());
    }

    #[test]
    fn networks_ban_every_address_in_them_and_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("echowarp_ban_list.txt");
        let mut list = BanList::load(&path).expect("empty");
        assert!(list.ban_deferred(prefix_of("10.9.8.7".parse().expect("ip"))));
        assert!(list.ban_deferred(prefix_of("2001:db8:1:2:3::4".parse().expect("ip"))));
        let (generation, text) = list.pending_write().expect("a change to write");
        assert_eq!(text, "10.9.8.0/24\n2001:db8:1:2::/64\n");
        write_atomic(&path, text.as_bytes(), false).expect("write");
        list.wrote(generation);
        assert!(list.pending_write().is_none());
        for ip in ["10.9.8.1", "::ffff:10.9.8.200", "2001:db8:1:2:ffff::1"] {
            assert!(list.contains(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.9.9.1", "2001:db8:1:3::1"] {
            assert!(!list.contains(ip.parse().expect("ip")), "{ip}");
        }
        let again = BanList::load(&path).expect("reload");
        assert!(again.contains("10.9.8.99".parse().expect("ip")));
        assert!(again.list().is_empty(), "networks are not single addresses");
        assert_eq!(again.entries(), ["10.9.8.0/24", "2001:db8:1:2::/64"]);
    }

    #[test]
    fn a_bad_byte_or_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("echowarp_ban_list.txt");
        let mut list = BanList::load(&path).expect("empty");
        assert!(list.add("10.0.0.1".parse().expect("ip")).expect("saved"));
        fs::write(
            &path,
            b"10.0.0.1\n10.0.0.\xff2\n\n10.0.0.3\n192.168.0.0/33\n",
        )
        .expect("edit");
        list.refresh().expect("a bad byte is no error");
        assert_eq!(list.list().len(), 2, "{:?}", list.entries());
        assert!(list.contains("10.0.0.3".parse().expect("ip")));
        // A file that cannot be read at all keeps the list in memory.
        fs::remove_file(&path).expect("rm");
        fs::create_dir(&path).expect("a folder where the file was");
        assert!(list.refresh().is_err());
        assert!(list.contains("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn the_list_is_bounded_oldest_out_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("echowarp_ban_list.txt");
        let mut list = BanList::load(&path).expect("empty");
        for i in 0..(MAX_BANS as u32 + 10) {
            list.ban_deferred(host(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())));
        }
        assert_eq!(list.len(), MAX_BANS);
        assert!(
            !list.contains("10.0.0.0".parse().expect("ip")),
            "the oldest went"
        );
        assert!(
            list.contains("10.0.64.9".parse().expect("ip")),
            "the newest stayed"
        );
        let (_, text) = list.pending_write().expect("pending");
        assert!(text.len() < 1 << 20);
    }
}
