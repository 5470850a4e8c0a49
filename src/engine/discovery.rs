//! LAN discovery over mDNS/DNS-SD (issue 20): a server announces itself while it listens;
//! `--discover`, the tray and a client given a server's name look for servers.
//!
//! The service type is EchoWarp's own, `_echowarp-pake._tcp`: EchoWarp 0.9 announces
//! `_echowarp._tcp` for a protocol of its own (WebRTC, no PAKE), and neither must take the
//! other's servers for its own. The TXT record says what a client needs before it connects and
//! nothing secret: the protocol version (`v`), the direction (`dir`, as the server sees it) and
//! whether a password is needed (`pw`, `1` or `0`). mdns-sd answers queries from its own thread,
//! with no avahi daemon; a system without multicast (a container, a VPN-only host) just has
//! nothing to find.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// EchoWarp's service type (DNS-SD), apart from EchoWarp 0.9's `_echowarp._tcp`.
pub const SERVICE_TYPE: &str = "_echowarp-pake._tcp.local.";

/// A server found on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its instance name (`EchoWarp on studio`).
    pub name: String,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Its port (TCP control and UDP audio).
    pub port: u16,
    /// Its protocol version (`1.1`).
    pub version: String,
    /// What it does with audio: `send`, `receive` or `duplex`.
    pub direction: String,
    /// Whether it asks for a password.
    pub password: bool,
}

/// A server's announcement, withdrawn when dropped.
pub(crate) struct Announcement {
    daemon: ServiceDaemon,
    name: String,
    fullname: String,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Announcement({})", self.fullname)
    }
}

/// This machine's name, for the instance and host names.
fn machine_name() -> String {
    let from_system = if cfg!(windows) {
        std::env::var("COMPUTERNAME").ok()
    } else {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
    };
    let name: String = from_system
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if name.is_empty() {
        "echowarp".to_owned()
    } else {
        name
    }
}

/// The name a server on `port` announces: `EchoWarp on HOST`, with the port when it is not
/// the default one (two servers on one machine).
pub fn instance_name(port: u16) -> String {
    let host = machine_name();
    if port == crate::store::profile::DEFAULT_PORT {
        format!("EchoWarp on {host}")
    } else {
        format!("EchoWarp on {host} port {port}")
    }
}

impl Announcement {
    /// Announces a server listening on `port`.
    ///
    /// # Errors
    /// Why mDNS cannot run here (no multicast, no interface).
    pub(crate) fn start(
        port: u16,
        version: &str,
        direction: &str,
        password: bool,
    ) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
        let host = format!("{}.local.", machine_name());
        let properties = [
            ("v", version),
            ("dir", direction),
            ("pw", if password { "1" } else { "0" }),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance_name(port),
            &host,
            "",
            port,
            &properties[..],
        )
        .map_err(|e| e.to_string())?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(|e| e.to_string())?;
        Ok(Self {
            daemon,
            name: instance_name(port),
            fullname,
        })
    }

    /// The name announced.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        // A goodbye (TTL 0) tells browsers at once that the server is gone; waited for briefly.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
    }
}

/// Looks for servers for `listen`, and returns those that answered, by name.
///
/// # Errors
/// Why mDNS cannot run here.
pub fn discover(listen: Duration) -> Result<Vec<Found>, String> {
    discover_until(listen, |_| false)
}

/// Looks for servers until `listen` has passed or `enough` says the servers found so far do.
///
/// # Errors
/// Why mDNS cannot run here.
pub fn discover_until(
    listen: Duration,
    mut enough: impl FnMut(&[Found]) -> bool,
) -> Result<Vec<Found>, String> {
    let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
    let events = daemon.browse(SERVICE_TYPE).map_err(|e| e.to_string())?;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let until = Instant::now() + listen;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        let resolved = matches!(event, ServiceEvent::ServiceResolved(_));
        fold(event, &mut found);
        if resolved && enough(&found.values().cloned().collect::<Vec<_>>()) {
            break;
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(Duration::from_millis(500));
    }
    Ok(found.into_values().collect())
}

/// Folds a browser's event into the servers known; true when they changed.
fn fold(event: ServiceEvent, found: &mut BTreeMap<String, Found>) -> bool {
    let name_of = |fullname: &str| {
        unescape(
            fullname
                .strip_suffix(&format!(".{SERVICE_TYPE}"))
                .unwrap_or(fullname),
        )
    };
    match event {
        ServiceEvent::ServiceResolved(s) => {
            let name = name_of(&s.fullname);
            let mut addrs: Vec<IpAddr> = s.addresses.iter().map(|a| a.to_ip_addr()).collect();
            addrs.sort_by_key(|a| (a.is_ipv6(), *a));
            let txt = |k: &str| {
                s.txt_properties
                    .get_property_val_str(k)
                    .unwrap_or_default()
                    .to_owned()
            };
            let server = Found {
                name: name.clone(),
                addrs,
                port: s.port,
                version: txt("v"),
                direction: txt("dir"),
                password: txt("pw") == "1",
            };
            found.insert(name, server.clone()) != Some(server)
        }
        ServiceEvent::ServiceRemoved(_, fullname) => found.remove(&name_of(&fullname)).is_some(),
        _ => false,
    }
}

/// Servers on the network, watched for as long as this lives: `on_change` hears the whole
/// list (by name) each time a server comes, changes or goes.
pub struct Watch {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// Starts watching.
    ///
    /// # Errors
    /// Why mDNS cannot run here.
    pub fn start(mut on_change: impl FnMut(Vec<Found>) + Send + 'static) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
        let events = daemon.browse(SERVICE_TYPE).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("discovery".into())
            .spawn(move || {
                let mut found = BTreeMap::new();
                // Ends when the daemon shuts down (the watch dropped) and the channel closes.
                while let Ok(event) = events.recv() {
                    if fold(event, &mut found) {
                        on_change(found.values().cloned().collect());
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self { daemon })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}

/// The server announced as `name` (exact, any case; else the one whose name holds it), looked
/// for for up to `listen`.
///
/// # Errors
/// Why mDNS cannot run here; no server, or more than one, by that name.
pub fn find_by_name(name: &str, listen: Duration) -> Result<Found, String> {
    let wanted = name.to_lowercase();
    let pick = |found: &[Found]| -> Option<Result<Found, String>> {
        if let Some(f) = found.iter().find(|f| f.name.to_lowercase() == wanted) {
            return Some(Ok(f.clone()));
        }
        let parts: Vec<&Found> = found
            .iter()
            .filter(|f| f.name.to_lowercase().contains(&wanted))
            .collect();
        match parts.as_slice() {
            [] => None,
            [one] => Some(Ok((*one).clone())),
            many => Some(Err(format!(
                "{name:?} names more than one server on the local network: {}",
                many.iter()
                    .map(|f| format!("{:?}", f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    // Stop at the first exact match; a part of a name waits for every answer.
    let found = discover_until(listen, |found| {
        found.iter().any(|f| f.name.to_lowercase() == wanted)
    })?;
    pick(&found).unwrap_or_else(|| {
        Err(format!(
            "no server named {name:?} answered on the local network (echowarp --discover lists them)"
        ))
    })
}

/// An instance label as DNS-SD escapes it (`\.` and `\\`), as its text.
fn unescape(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    let mut chars = label.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_labels_are_read_back_as_announced() {
        assert_eq!(unescape(r"EchoWarp on studio"), "EchoWarp on studio");
        assert_eq!(unescape(r"v1\.1 a\\b"), r"v1.1 a\b");
    }
}
