//! What the tray shows for a given state, as plain data: which items exist, which are enabled or
//! checked, and what each does. Computed without a display, so it is tested without one; the
//! tray (feature `tray`) only turns it into muda items (testing.md, STYLE.md habit 14).

use crate::engine::{DeviceState, Event};
use crate::store::profile::Role;

/// The state the icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    /// Not streaming.
    Idle,
    /// Starting, connecting or reconnecting.
    Connecting,
    /// Audio is flowing.
    Streaming,
    /// Stopped on an error.
    Error,
}

impl TrayState {
    /// The icon file's stem under `icons/`.
    pub fn icon_name(self) -> &'static str {
        match self {
            TrayState::Idle => "idle",
            TrayState::Connecting => "connecting",
            TrayState::Streaming => "streaming",
            TrayState::Error => "error",
        }
    }
}

/// What a menu item does when clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start streaming with the profile's settings.
    Start,
    /// Stop streaming.
    Stop,
    /// Switch role (restarts a running stream).
    SetRole(Role),
    /// Use this device spec.
    SelectDevice(String),
    /// Become a client of the server announced under this name, and connect.
    JoinServer(String),
    /// List the devices again.
    RefreshDevices,
    /// Lift one ban.
    Unban(ipnet::IpNet),
    /// Lift every ban.
    ClearBans,
    /// Turn start at login on or off.
    ToggleAutostart,
    /// Open the profile in the desktop's editor.
    EditProfile,
    /// Open the logs folder.
    OpenLogs,
    /// Stop and exit.
    Quit,
}

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Text only (the status line, "None").
    Label(String),
    /// A clickable entry.
    Button {
        /// Its text.
        text: String,
        /// What it does.
        action: Action,
        /// Whether it can be clicked now.
        enabled: bool,
    },
    /// A checkable entry.
    Check {
        /// Its text.
        text: String,
        /// What it does.
        action: Action,
        /// Ticked.
        checked: bool,
    },
    /// A submenu.
    Submenu {
        /// Its text.
        text: String,
        /// Its entries.
        items: Vec<Item>,
    },
    /// A line between groups.
    Separator,
}

/// Everything the menu depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrayView {
    /// The profile's role.
    pub role: Role,
    /// The device spec in use.
    pub device: String,
    /// What `--list-devices` offers for the role: (spec, label).
    pub devices: Vec<(String, String)>,
    /// Banned addresses (as /32 or /128) and networks.
    pub bans: Vec<ipnet::IpNet>,
    /// Icon state.
    pub state: TrayState,
    /// The engine runs (or is starting).
    pub running: bool,
    /// Live figures or the last problem, for the status line.
    pub detail: String,
    /// Start at login is on.
    pub autostart: bool,
    /// The server runs without a password: `Some(true)` serving any address, `Some(false)`
    /// local networks only.
    pub no_password: Option<bool>,
    /// Servers announced on the local network: (name, whether it asks for a password).
    pub servers: Vec<(String, bool)>,
    /// The profile's server address (a client's).
    pub server_address: String,
}

impl TrayView {
    /// A stopped tray for `role` and `device`.
    pub fn new(role: Role, device: &str) -> Self {
        Self {
            role,
            device: device.to_owned(),
            devices: Vec::new(),
            bans: Vec::new(),
            state: TrayState::Idle,
            running: false,
            detail: String::new(),
            autostart: false,
            no_password: None,
            servers: Vec::new(),
            server_address: String::new(),
        }
    }

    /// The first line of the menu: role, state and live figures.
    pub fn status_line(&self) -> String {
        let role = match self.role {
            Role::Server => "Server",
            Role::Client => "Client",
        };
        let state = match self.state {
            TrayState::Idle => "stopped",
            TrayState::Connecting => "connecting",
            TrayState::Streaming => "streaming",
            TrayState::Error => "error",
        };
        let warning = match self.no_password {
            Some(true) => " · no password: anyone can listen",
            Some(false) => " · no password: local networks only",
            None => "",
        };
        if self.detail.is_empty() {
            format!("EchoWarp {role}: {state}{warning}")
        } else {
            format!("EchoWarp {role}: {state}{warning} · {}", self.detail)
        }
    }

    /// Folds an engine event into the view; returns true when the menu or icon must change.
    pub fn apply(&mut self, event: &Event) -> bool {
        let before = (
            self.state,
            self.detail.clone(),
            self.running,
            self.bans.len(),
            self.no_password,
        );
        match event {
            Event::Listening(addr) => {
                self.state = TrayState::Connecting;
                self.detail = format!("listening on port {}", addr.port());
            }
            Event::Connecting { attempt, of } => {
                self.state = TrayState::Connecting;
                self.detail = if *of == 0 {
                    format!("attempt {attempt}")
                } else {
                    format!("attempt {attempt} of {of}")
                };
            }
            Event::Connected { peer, format } => {
                self.state = TrayState::Streaming;
                self.detail = format!("{peer} · {format}");
            }
            Event::ConnectionLost(why) => {
                self.state = TrayState::Connecting;
                self.detail = format!("reconnecting: {why}");
            }
            Event::ClientJoined(peer) => {
                // The next Stats (within a second) replaces this with the figures.
                self.state = TrayState::Streaming;
                self.detail = format!("{} joined", peer.ip().to_canonical());
            }
            Event::Stats(s) => {
                if self.role == Role::Server {
                    self.state = if s.clients > 0 {
                        TrayState::Streaming
                    } else {
                        TrayState::Connecting
                    };
                    self.detail = match s.clients {
                        0 => format!("waiting for clients · {}", s.format),
                        1 => format!("1 client · {}", s.format),
                        n => format!("{n} clients · {}", s.format),
                    };
                } else {
                    let total = s.packets + s.lost;
                    let loss = if total == 0 {
                        0.0
                    } else {
                        100.0 * s.lost as f64 / total as f64
                    };
                    let latency = s
                        .latency_ms
                        .map(|l| format!(" · ~{l:.0} ms"))
                        .unwrap_or_default();
                    self.detail = format!("{} · {loss:.1}% loss{latency}", s.format);
                }
                if s.device != DeviceState::Ok {
                    let what = if self.role == Role::Server {
                        "capture"
                    } else {
                        "playback"
                    };
                    self.detail = format!("{what} device {}: waiting for it", s.device.name());
                }
            }
            Event::Banned(ip) if !self.bans.contains(&ipnet::IpNet::from(*ip)) => {
                self.bans.push(ipnet::IpNet::from(*ip));
            }
            Event::BannedNetwork(net) if !self.bans.contains(net) => self.bans.push(*net),
            Event::NoPassword { anyone } => self.no_password = Some(*anyone),
            Event::Stopped(Ok(_)) => {
                self.state = TrayState::Idle;
                self.running = false;
                self.detail.clear();
                self.no_password = None;
            }
            Event::Stopped(Err(e)) => {
                self.state = TrayState::Error;
                self.running = false;
                self.detail = super::display_chain(e);
                self.no_password = None;
            }
            _ => {}
        }
        before
            != (
                self.state,
                self.detail.clone(),
                self.running,
                self.bans.len(),
                self.no_password,
            )
    }

    /// The menu for this view.
    pub fn menu(&self) -> Vec<Item> {
        let mut items = vec![Item::Label(self.status_line()), Item::Separator];
        items.push(if self.running {
            Item::Button {
                text: "Stop".into(),
                action: Action::Stop,
                enabled: true,
            }
        } else {
            Item::Button {
                text: "Start".into(),
                action: Action::Start,
                enabled: true,
            }
        });
        items.push(Item::Submenu {
            text: "Role".into(),
            items: vec![
                Item::Check {
                    text: "Server (capture and send)".into(),
                    action: Action::SetRole(Role::Server),
                    checked: self.role == Role::Server,
                },
                Item::Check {
                    text: "Client (receive and play)".into(),
                    action: Action::SetRole(Role::Client),
                    checked: self.role == Role::Client,
                },
            ],
        });
        let mut servers: Vec<Item> = self
            .servers
            .iter()
            .map(|(name, password)| Item::Check {
                text: if *password {
                    format!("{name} (password)")
                } else {
                    name.clone()
                },
                action: Action::JoinServer(name.clone()),
                checked: self.role == Role::Client && self.server_address == *name,
            })
            .collect();
        if servers.is_empty() {
            servers.push(Item::Label("None found".into()));
        }
        items.push(Item::Submenu {
            text: "Servers on this network".into(),
            items: servers,
        });
        let mut devices: Vec<Item> =
            std::iter::once(("default".to_owned(), "Default device".to_owned()))
                .chain(self.devices.iter().cloned())
                .map(|(spec, label)| Item::Check {
                    checked: spec == self.device,
                    text: label,
                    action: Action::SelectDevice(spec),
                })
                .collect();
        devices.push(Item::Separator);
        devices.push(Item::Button {
            text: "Refresh".into(),
            action: Action::RefreshDevices,
            enabled: true,
        });
        items.push(Item::Submenu {
            text: "Device".into(),
            items: devices,
        });
        if self.role == Role::Server {
            let mut bans: Vec<Item> = self
                .bans
                .iter()
                .map(|net| Item::Button {
                    text: format!("Unban {}", crate::store::bans::entry_text(net)),
                    action: Action::Unban(*net),
                    enabled: true,
                })
                .collect();
            if bans.is_empty() {
                bans.push(Item::Label("None".into()));
            } else {
                bans.push(Item::Separator);
                bans.push(Item::Button {
                    text: "Clear all".into(),
                    action: Action::ClearBans,
                    enabled: true,
                });
            }
            items.push(Item::Submenu {
                text: "Banned clients".into(),
                items: bans,
            });
        }
        items.push(Item::Separator);
        items.push(Item::Check {
            text: "Start at login".into(),
            action: Action::ToggleAutostart,
            checked: self.autostart,
        });
        items.push(Item::Button {
            text: "Edit profile".into(),
            action: Action::EditProfile,
            enabled: true,
        });
        items.push(Item::Button {
            text: "Open logs folder".into(),
            action: Action::OpenLogs,
            enabled: true,
        });
        items.push(Item::Separator);
        items.push(Item::Button {
            text: "Quit".into(),
            action: Action::Quit,
            enabled: true,
        });
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineError, Outcome, Stats};

    fn texts(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Label(t)
                | Item::Button { text: t, .. }
                | Item::Check { text: t, .. }
                | Item::Submenu { text: t, .. } => t.clone(),
                Item::Separator => "---".into(),
            })
            .collect()
    }

    fn submenu<'a>(items: &'a [Item], name: &str) -> &'a [Item] {
        items
            .iter()
            .find_map(|i| match i {
                Item::Submenu { text, items } if text == name => Some(items.as_slice()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} submenu in {:?}", texts(items)))
    }

    #[test]
    fn a_stopped_server_offers_start_and_shows_no_bans() {
        let v = TrayView::new(Role::Server, "default");
        let m = v.menu();
        assert_eq!(
            texts(&m),
            [
                "EchoWarp Server: stopped",
                "---",
                "Start",
                "Role",
                "Servers on this network",
                "Device",
                "Banned clients",
                "---",
                "Start at login",
                "Edit profile",
                "Open logs folder",
                "---",
                "Quit"
            ]
        );
        assert_eq!(submenu(&m, "Banned clients"), [Item::Label("None".into())]);
        assert_eq!(
            submenu(&m, "Servers on this network"),
            [Item::Label("None found".into())]
        );
        // A client of the second of two servers found: it is ticked, and a password shows.
        let mut c = TrayView::new(Role::Client, "default");
        c.servers = vec![
            ("EchoWarp on a".into(), false),
            ("EchoWarp on b".into(), true),
        ];
        c.server_address = "EchoWarp on b".into();
        let join = |name: &str, text: &str, checked| Item::Check {
            text: text.into(),
            action: Action::JoinServer(name.into()),
            checked,
        };
        assert_eq!(
            submenu(&c.menu(), "Servers on this network"),
            [
                join("EchoWarp on a", "EchoWarp on a", false),
                join("EchoWarp on b", "EchoWarp on b (password)", true)
            ]
        );
        let login = |v: &TrayView| {
            v.menu().into_iter().find_map(|i| match i {
                Item::Check {
                    text,
                    action: Action::ToggleAutostart,
                    checked,
                } if text == "Start at login" => Some(checked),
                _ => None,
            })
        };
        assert_eq!(login(&v), Some(false));
        let mut on = v.clone();
        on.autostart = true;
        assert_eq!(login(&on), Some(true), "the check follows the profile");
        let roles = submenu(&m, "Role");
        assert!(matches!(&roles[0], Item::Check { checked: true, .. }));
        assert!(matches!(&roles[1], Item::Check { checked: false, .. }));
    }

    #[test]
    fn a_client_has_no_ban_menu_and_ticks_its_device() {
        let mut v = TrayView::new(Role::Client, "alsa:speakerB");
        v.devices = vec![
            ("alsa:speakerB".into(), "Speaker B".into()),
            ("alsa:hdmi".into(), "HDMI".into()),
        ];
        let m = v.menu();
        assert!(!texts(&m).contains(&"Banned clients".to_owned()));
        let devices = submenu(&m, "Device");
        let ticked: Vec<String> = devices
            .iter()
            .filter_map(|i| match i {
                Item::Check {
                    text,
                    checked: true,
                    ..
                } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ticked, ["Speaker B"]);
        assert!(devices.contains(&Item::Button {
            text: "Refresh".into(),
            action: Action::RefreshDevices,
            enabled: true
        }));
    }

    #[test]
    fn a_server_without_a_password_says_so_in_its_status_line_until_it_stops() {
        let mut v = TrayView::new(Role::Server, "default");
        v.running = true;
        assert!(v.apply(&Event::NoPassword { anyone: false }));
        v.apply(&Event::Listening("[::]:4415".parse().expect("addr")));
        assert_eq!(
            v.status_line(),
            "EchoWarp Server: connecting · no password: local networks only · listening on port 4415"
        );
        v.apply(&Event::Stats(Stats::default()));
        assert!(
            v.status_line().contains("no password"),
            "{}",
            v.status_line()
        );
        v.apply(&Event::Stopped(Ok(crate::engine::Outcome::Stopped)));
        assert!(!v.status_line().contains("password"));
        v.apply(&Event::NoPassword { anyone: true });
        assert!(v.status_line().contains("no password: anyone can listen"));
    }

    #[test]
    fn engine_events_drive_state_status_and_bans() {
        let mut v = TrayView::new(Role::Server, "default");
        v.running = true;
        assert!(v.apply(&Event::Listening("[::]:4415".parse().expect("addr"))));
        assert_eq!(v.state, TrayState::Connecting);
        let stats = Stats {
            clients: 1,
            format: "48000 Hz 2 ch pcm encrypted".into(),
            ..Stats::default()
        };
        assert!(v.apply(&Event::Stats(stats.clone())));
        assert_eq!(v.state, TrayState::Streaming);
        assert_eq!(
            v.status_line(),
            "EchoWarp Server: streaming · 1 client · 48000 Hz 2 ch pcm encrypted"
        );
        assert!(!v.apply(&Event::Stats(stats)), "same figures: no redraw");
        assert_eq!(texts(&v.menu())[2], "Stop");
        let ip: std::net::IpAddr = "10.0.0.7".parse().expect("ip");
        assert!(v.apply(&Event::Banned(ip)), "a ban changes the menu");
        assert!(!v.apply(&Event::Banned(ip)), "the same ban twice does not");
        let m = v.menu();
        let bans = submenu(&m, "Banned clients");
        assert_eq!(texts(bans), ["Unban 10.0.0.7", "---", "Clear all"]);
        let net: ipnet::IpNet = "10.0.1.0/24".parse().expect("net");
        assert!(v.apply(&Event::BannedNetwork(net)), "a network's ban too");
        let m = v.menu();
        let bans = submenu(&m, "Banned clients");
        assert_eq!(
            texts(bans),
            ["Unban 10.0.0.7", "Unban 10.0.1.0/24", "---", "Clear all"]
        );
        let in_use = std::io::Error::new(std::io::ErrorKind::AddrInUse, "port in use");
        let e = EngineError::io("cannot listen on port 4999")(in_use);
        assert!(v.apply(&Event::Stopped(Err(e))));
        assert_eq!((v.state, v.running), (TrayState::Error, false));
        assert!(
            v.status_line()
                .ends_with("cannot listen on port 4999: port in use"),
            "{}",
            v.status_line()
        );
        v.apply(&Event::Stopped(Ok(Outcome::Stopped)));
        assert_eq!(v.state.icon_name(), "idle");
    }

    #[test]
    fn a_client_shows_reconnecting_and_loss() {
        let mut v = TrayView::new(Role::Client, "default");
        v.apply(&Event::Connecting { attempt: 2, of: 5 });
        assert_eq!(
            v.status_line(),
            "EchoWarp Client: connecting · attempt 2 of 5"
        );
        v.apply(&Event::Connected {
            peer: "192.0.2.1:4415".parse().expect("addr"),
            format: "48000 Hz 2 ch pcm encrypted".into(),
        });
        assert_eq!(v.state, TrayState::Streaming);
        v.apply(&Event::Stats(Stats {
            packets: 990,
            lost: 10,
            format: "48000 Hz".into(),
            latency_ms: Some(17.6),
            ..Stats::default()
        }));
        assert_eq!(v.detail, "48000 Hz · 1.0% loss · ~18 ms");
        v.apply(&Event::ConnectionLost("the server stopped".into()));
        assert_eq!(v.state, TrayState::Connecting);
    }
}
