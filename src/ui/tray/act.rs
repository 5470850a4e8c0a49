//! What the tray does for a menu click or a dialog's answer: the profile edited (the file keeps
//! its comments), the view updated, the stream started or restarted where the change needs it.

use super::desktop::open_with_desktop;
use super::dialog::{self, Answer};
use super::{App, UserEvent};
use crate::protocol::Password;
use crate::store::paths;
use crate::store::profile::Role;
use crate::ui::preset::Preset;
use crate::ui::tray_menu::Action;

impl App {
    /// Returns false to quit.
    pub(super) fn act(&mut self, action: Action) -> bool {
        match action {
            Action::Start => self.start(),
            Action::Stop => self.stop(),
            Action::SetRole(role) => {
                self.edit_profile(|p| p.role = role);
                self.view.role = role;
                self.refresh_devices();
                self.restart_if_running();
            }
            Action::JoinServer(name) => self.connect_to(name, None),
            Action::AskServer => {
                let servers: Vec<String> = self.view.servers.iter().map(|s| s.0.clone()).collect();
                let proxy = self.proxy.clone();
                let asked = dialog::ask_server(
                    &servers,
                    &self.profile.server_address,
                    &self.profile.password,
                    move |a| {
                        let _ = proxy.send_event(UserEvent::Answer(a));
                    },
                );
                if !asked {
                    self.no_dialog();
                }
            }
            Action::AskPassword => {
                let proxy = self.proxy.clone();
                let asked = dialog::ask_password(&self.profile.password, move |a| {
                    let _ = proxy.send_event(UserEvent::Answer(a));
                });
                if !asked {
                    self.no_dialog();
                }
            }
            Action::SetPreset(preset) => {
                self.edit_profile(|p| preset.apply(&mut p.audio));
                self.view.preset = Preset::of(&self.profile.audio);
                self.restart_if_running();
            }
            Action::SelectDevice(spec) => {
                self.edit_profile(|p| p.device.clone_from(&spec));
                self.view.device = spec;
                self.restart_if_running();
            }
            Action::ToggleMute => {
                let on = !self.view.muted;
                self.edit_profile(|p| p.mute = on);
                self.apply_mute();
            }
            Action::ToggleAutostart => {
                let on = !self.view.autostart;
                self.edit_profile(|p| p.autostart = on);
                self.apply_autostart();
            }
            Action::RefreshDevices => self.refresh_devices(),
            Action::Unban(net) => self.edit_bans(|l| l.remove_entry(&net).map(|_| ())),
            Action::ClearBans => self.edit_bans(|l| l.clear().map(|_| ())),
            Action::EditProfile => self.open_profile(),
            Action::OpenLogs => {
                if let Ok(dir) = paths::log_dir() {
                    let _ = std::fs::create_dir_all(&dir);
                    open_with_desktop(dir);
                }
            }
            Action::Quit => {
                self.generation += 1;
                drop(self.engine.take());
                // The event loop ends the process without dropping its state: removed here.
                self.mic = None;
                return false;
            }
        }
        true
    }

    /// A dialog's answer, applied as the menu's own changes are.
    pub(super) fn answered(&mut self, answer: Answer) {
        match answer {
            Answer::Server { address, password } => self.connect_to(address, Some(password)),
            Answer::Password(password) => {
                self.edit_profile(|p| p.password = password.clone());
                self.restart_if_running();
            }
        }
    }

    /// Becomes a client of `address` (with `password`, where given) and connects.
    fn connect_to(&mut self, address: String, password: Option<Password>) {
        let role_changes = self.profile.role != Role::Client;
        self.edit_profile(|p| {
            p.role = Role::Client;
            p.server_address.clone_from(&address);
            if let Some(pw) = &password {
                p.password = pw.clone();
            }
        });
        self.view.role = Role::Client;
        self.view.server_address = address;
        if role_changes {
            self.refresh_devices();
        }
        if self.engine.is_some() {
            self.restart_if_running();
        } else {
            self.start();
        }
    }

    /// Where this platform has no dialog yet, the profile opens in the desktop's editor.
    fn no_dialog(&mut self) {
        self.tell(
            "EchoWarp: settings",
            "This platform has no settings dialog yet: the profile opens in your editor.".into(),
        );
        self.open_profile();
    }

    fn open_profile(&mut self) {
        let path = self.profile_path.clone();
        if !path.exists() {
            // A commented file to edit, holding the settings in use.
            if let Err(e) = self.profile.save(&path) {
                self.fail(format!("cannot write the profile: {e}"));
            }
        }
        open_with_desktop(path);
    }
}
