//! What the tray shows for a given state, as plain data: which items exist, which are enabled or
//! checked, and what each does. Computed without a display, so it is tested without one; the
//! tray (feature `tray`) only turns it into muda items (testing.md, STYLE.md habit 14).

use super::preset::Preset;
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
    /// Send silence, or the sound again (no restart).
    ToggleMute,
    /// Switch role (restarts a running stream).
    SetRole(Role),
    /// Use this device spec.
    SelectDevice(String),
    /// Become a client of the server announced under this name, and connect.
    JoinServer(String),
    /// Ask for a server's address and its password, then connect to it.
    AskServer,
    /// Ask for the password (both sides use the same).
    AskPassword,
    /// Use this latency preset.
    SetPreset(Preset),
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
    /// What this side sends is muted (the profile's `mute`).
    pub muted: bool,
    /// The latency preset the profile's `[audio]` is, if any.
    pub preset: Option<Preset>,
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
            muted: false,
            preset: Some(Preset::Everyday),
        }
    }

    /// The icon file's stem under `icons/`: the state's, crossed out while muted.
    pub fn icon_name(&self) -> &'static str {
        match (self.state, self.muted) {
            (TrayState::Idle, true) => "idle-muted",
            (TrayState::Connecting, true) => "connecting-muted",
            (TrayState::Streaming, true) => "streaming-muted",
            (TrayState::Error, true) => "error-muted",
            (state, false) => state.icon_name(),
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
        let muted = if self.muted { " · muted" } else { "" };
        if self.detail.is_empty() {
            format!("EchoWarp {role}: {state}{muted}{warning}")
        } else {
            format!("EchoWarp {role}: {state}{muted}{warning} · {}", self.detail)
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
        // Always there, so that the rows below keep their places whatever the role; a client
        // sends nothing yet, and its mute waits in the profile for when it does.
        items.push(Item::Check {
            text: "Mute (send silence)".into(),
            action: Action::ToggleMute,
            checked: self.muted,
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
        items.push(Item::Button {
            text: "Connect to a server…".into(),
            action: Action::AskServer,
            enabled: true,
        });
        items.push(Item::Button {
            text: "Password…".into(),
            action: Action::AskPassword,
            enabled: true,
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
        let mut presets: Vec<Item> = Preset::ALL
            .into_iter()
            .map(|p| Item::Check {
                text: p.label().into(),
                action: Action::SetPreset(p),
                checked: self.preset == Some(p),
            })
            .collect();
        if self.preset.is_none() {
            presets.push(Item::Label("(the profile's own [audio] settings)".into()));
        }
        items.push(Item::Submenu {
            text: "Latency".into(),
            items: presets,
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
mod tests;
