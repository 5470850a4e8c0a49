//! The ban list: one IP per line in `echowarp_ban_list.txt`, as in EchoWarp 0.4.
//!
//! The server re-reads the file when it changes on disk (an edit by hand takes effect at the next
//! connection attempt) and writes it atomically whenever it bans someone.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::atomic::write_atomic;
use super::StoreError;

/// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; bans are kept in plain form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The persistent ban list.
#[derive(Debug)]
pub struct BanList {
    path: PathBuf,
    ips: BTreeSet<IpAddr>,
    stamp: Option<(SystemTime, u64)>,
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let m = fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl BanList {
    /// Loads the list at `path`; a missing file is an empty list. Lines that are not IPs
    /// (comments, blanks, typos) are skipped with a warning.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file exists but cannot be read.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let mut list = Self {
            path: path.to_owned(),
            ips: BTreeSet::new(),
            stamp: None,
        };
        list.read()?;
        Ok(list)
    }

    fn read(&mut self) -> Result<(), StoreError> {
        self.stamp = stamp_of(&self.path);
        self.ips.clear();
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(&self.path)(e)),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.parse::<IpAddr>() {
                Ok(ip) => {
                    self.ips.insert(canonical(ip));
                }
                Err(_) => tracing::warn!(
                    "{}:{}: not an IP address: {line:?}",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        Ok(())
    }

    /// Re-reads the file if it changed on disk since the last read or write.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it cannot be read.
    pub fn refresh(&mut self) -> Result<(), StoreError> {
        if stamp_of(&self.path) != self.stamp {
            self.read()?;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<(), StoreError> {
        let mut text = String::new();
        for ip in &self.ips {
            text.push_str(&ip.to_string());
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes(), false)?;
        self.stamp = stamp_of(&self.path);
        Ok(())
    }

    /// Whether `ip` is banned.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ips.contains(&canonical(ip))
    }

    /// Bans `ip` and saves; returns false if it was already banned.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn add(&mut self, ip: IpAddr) -> Result<bool, StoreError> {
        if !self.ips.insert(canonical(ip)) {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Lifts a ban and saves; returns false if `ip` was not banned.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn remove(&mut self, ip: IpAddr) -> Result<bool, StoreError> {
        if !self.ips.remove(&canonical(ip)) {
            return Ok(false);
        }
        self.save().map(|()| true)
    }

    /// Lifts every ban and saves; returns how many there were.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the list cannot be written.
    pub fn clear(&mut self) -> Result<usize, StoreError> {
        let n = self.ips.len();
        self.ips.clear();
        self.save().map(|()| n)
    }

    /// The banned addresses, sorted.
    pub fn list(&self) -> Vec<IpAddr> {
        self.ips.iter().copied().collect()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Counts failed logins per address and decides bans (`threshold` 0: never ban).
#[derive(Debug, Default)]
pub struct FailureCounter {
    threshold: u32,
    counts: HashMap<IpAddr, u32>,
}

impl FailureCounter {
    /// Bans after `threshold` failures.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            counts: HashMap::new(),
        }
    }

    /// Records a failure; returns the count so far and whether it reached the ban threshold.
    pub fn fail(&mut self, ip: IpAddr) -> (u32, bool) {
        let c = self.counts.entry(canonical(ip)).or_insert(0);
        *c += 1;
        (*c, self.threshold != 0 && *c >= self.threshold)
    }

    /// Forgets an address's failures (after a successful login or a ban).
    pub fn forget(&mut self, ip: IpAddr) {
        self.counts.remove(&canonical(ip));
    }
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
    fn failure_counter_threshold() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut c = FailureCounter::new(2);
        assert_eq!(c.fail(ip), (1, false));
        assert_eq!(c.fail(ip), (2, true));
        let mut never = FailureCounter::new(0);
        for _ in 0..100 {
            assert!(!never.fail(ip).1);
        }
    }
}
