//! The system tray (feature `tray`): a tao event loop on the main thread, a tray-icon icon whose
//! picture follows the engine's state, and a menu computed by [`super::tray_menu`].
//!
//! Event-driven, never polling: menu clicks come through `MenuEvent::set_event_handler`, engine
//! events through a forwarding thread, both into the loop's proxy; with `ControlFlow::Wait` the
//! loop sleeps until one arrives (STYLE.md habit 14).

use std::collections::HashMap;
use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use tao::event::{Event as TaoEvent, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tray_icon::menu::{MenuEvent, MenuId, MenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

mod act;
#[cfg(windows)]
mod click;
mod desktop;
mod dialog;
#[cfg(windows)]
mod dialog_win;
mod items;
mod watch;

use desktop::{decode_icon, spawn_notifier, ICONS};
pub use desktop::{desktop_present, APP_USER_MODEL_ID};
use watch::watch_profile;

use super::autostart;
use super::notice::{Notice, Notifier};
use super::preset::Preset;
use super::settings::Settings;
use super::tray_menu::{Action, Item, TrayState, TrayView};
use crate::audio::virtual_mic::VirtualMic;
use crate::audio::DeviceKind;
use crate::engine::{ConfigError, EngineHandle, Event, Mute};
use crate::store::bans::BanList;
use crate::store::paths;
use crate::store::profile::{Profile, Role};
use crate::store::StoreError;

/// Why the tray could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrayError {
    /// No display to put an icon on.
    #[error("no desktop session for the tray (DISPLAY and WAYLAND_DISPLAY are unset); run headless instead")]
    NoDesktop,
    /// The profile given cannot run (told before the desktop is looked for).
    #[error(transparent)]
    Profile(#[from] ConfigError),
    /// No folder for the profile.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum UserEvent {
    Menu(MenuId),
    /// An engine event, tagged with the generation of the engine that sent it.
    Engine(u64, Event),
    /// A stopped engine has released its sockets and device.
    EngineReleased,
    /// The profile file changed on disk (after the writes settled).
    ProfileChanged,
    /// The servers announced on the local network changed.
    Servers(Vec<crate::engine::discovery::Found>),
    /// A dialog was answered.
    Answer(dialog::Answer),
}

struct App {
    notifier: Notifier,
    notices: crossbeam_channel::Sender<Notice>,
    /// The effective settings: the profile file with the command line's flags over it.
    profile: Profile,
    /// The file read, watched and written back to.
    profile_path: PathBuf,
    /// The last profile problem told (told once until it changes or is fixed).
    profile_error: Option<String>,
    /// The tray started without a valid profile: stream once one loads.
    waiting_for_profile: bool,
    /// Start again once the stopping engine has let go of its port and device.
    restart_pending: bool,
    settings: Settings,
    view: TrayView,
    engine: Option<EngineHandle>,
    /// The running engine's mute switch, flipped from the menu or the profile.
    mute: Option<Mute>,
    /// The virtual microphone a client plays into (profile `virtual_mic`).
    mic: Option<VirtualMic>,
    generation: u64,
    tray: Option<TrayIcon>,
    actions: HashMap<MenuId, Action>,
    /// What the tray shows now (menu, icon, tooltip): a redraw that would change nothing leaves
    /// the menu alone, so that a menu the user has open is not swapped under the pointer.
    shown: Option<(Vec<Item>, &'static str, String)>,
    /// The menu's status line, whose text changes in place.
    status_item: Option<MenuItem>,
    icons: HashMap<&'static str, Icon>,
    proxy: EventLoopProxy<UserEvent>,
}

impl App {
    fn start(&mut self) {
        self.generation += 1;
        // A client's virtual microphone, made once and kept while the tray runs (a stopped
        // stream leaves it silent, not gone).
        let mut profile = self.profile.clone();
        if profile.virtual_mic && profile.role == Role::Client {
            if self.mic.is_none() {
                match VirtualMic::create() {
                    Ok(m) => self.mic = Some(m),
                    Err(e) => return self.fail(format!("virtual microphone: {e}")),
                }
            }
            if let Some(m) = &self.mic {
                profile.device.clone_from(&m.device);
            }
        } else {
            self.mic = None;
        }
        let config = match self.settings.config(&profile) {
            Ok(c) => c,
            Err(e) => return self.fail(super::display_chain(&e)),
        };
        self.mute = config.mute();
        match EngineHandle::start(config) {
            Ok(handle) => {
                let (events, proxy, generation) =
                    (handle.events().clone(), self.proxy.clone(), self.generation);
                let forwarder =
                    thread::Builder::new()
                        .name("tray events".into())
                        .spawn(move || {
                            for e in events.iter() {
                                if proxy.send_event(UserEvent::Engine(generation, e)).is_err() {
                                    break;
                                }
                            }
                        });
                if let Err(e) = forwarder {
                    return self.fail(format!("cannot start the event thread: {e}"));
                }
                self.engine = Some(handle);
                self.view.running = true;
                self.view.state = TrayState::Connecting;
                self.view.detail = "starting".into();
            }
            Err(e) => self.fail(super::display_chain(&e)),
        }
    }

    fn fail(&mut self, why: String) {
        tracing::error!("{why}");
        self.view.running = false;
        self.view.state = TrayState::Error;
        self.view.detail = why;
    }

    /// Stops the engine without blocking the loop: the handle joins on a thread of its own,
    /// which reports [`UserEvent::EngineReleased`] once the port and device are free.
    fn stop(&mut self) {
        self.generation += 1;
        self.restart_pending = false;
        if let Some(handle) = self.engine.take() {
            let proxy = self.proxy.clone();
            let _ = thread::Builder::new()
                .name("engine stop".into())
                .spawn(move || {
                    drop(handle);
                    let _ = proxy.send_event(UserEvent::EngineReleased);
                });
        }
        self.view.running = false;
        self.view.state = TrayState::Idle;
        self.view.detail.clear();
    }

    /// Restarts a running engine with the current settings, once the old one has released its
    /// port (the new one usually binds the same).
    fn restart_if_running(&mut self) {
        if self.engine.is_some() {
            self.stop();
            self.restart_pending = true;
            self.view.running = true;
            self.view.state = TrayState::Connecting;
            self.view.detail = "restarting".into();
        }
    }

    fn tell(&mut self, summary: &str, body: String) {
        let notice = Notice {
            summary: summary.to_owned(),
            body,
        };
        for n in self.notifier.limit(notice, Instant::now()) {
            let _ = self.notices.send(n);
        }
    }

    /// A change made from the menu: applied to the running settings and to the file, where only
    /// that value is replaced (the user's comments and the command line's flags stay out of it).
    fn edit_profile(&mut self, change: impl Fn(&mut Profile)) {
        change(&mut self.profile);
        let path = self.profile_path.clone();
        let saved = Profile::load_if_exists(&path).and_then(|file| {
            let mut file = file.unwrap_or_default();
            change(&mut file);
            file.save(&path)
        });
        if let Err(e) = saved {
            let why = format!("the change is not saved: {e}");
            tracing::warn!("{why}");
            self.tell("EchoWarp: profile not saved", why);
        }
    }

    /// Makes the menu, the icon and the running stream follow the profile's `mute`.
    fn apply_mute(&mut self) {
        self.view.muted = self.profile.mute;
        if let Some(m) = &self.mute {
            m.set(self.profile.mute);
        }
    }

    /// Makes the login entry match the profile's `autostart` (re-registering the current path
    /// when on, so a moved install keeps working).
    fn apply_autostart(&mut self) {
        match autostart::set(self.profile.autostart) {
            Ok(()) => self.view.autostart = self.profile.autostart,
            Err(e) => {
                self.view.autostart = autostart::is_enabled().unwrap_or(false);
                tracing::warn!("{e}");
                self.tell("EchoWarp: start at login", e.to_string());
            }
        }
    }

    /// The profile file changed: take the new settings, restarting the stream if they touch it;
    /// a file that does not load leaves everything running as it is and says why.
    fn reload_profile(&mut self) {
        let fresh = match self.settings.profile() {
            Ok(p) => p,
            Err(e) => {
                let message = super::display_chain(&e);
                tracing::warn!("profile not loaded, keeping the running settings: {message}");
                if self.profile_error.as_deref() != Some(message.as_str()) {
                    self.profile_error = Some(message.clone());
                    let body = format!("{message}. The running settings are kept.");
                    self.tell("EchoWarp: profile error", body);
                }
                return;
            }
        };
        if self.profile_error.take().is_some() {
            tracing::info!("the profile loads again");
        }
        if fresh == self.profile && !self.waiting_for_profile {
            return; // our own write, or only comments changed
        }
        tracing::info!("profile changed on disk; applying it");
        let old = std::mem::replace(&mut self.profile, fresh);
        self.view.role = self.profile.role;
        self.view.device.clone_from(&self.profile.device);
        self.view
            .server_address
            .clone_from(&self.profile.server_address);
        if old.autostart != self.profile.autostart || self.waiting_for_profile {
            self.apply_autostart();
        }
        self.apply_mute();
        self.view.preset = Preset::of(&self.profile.audio);
        if (old.role, old.device_kind) != (self.profile.role, self.profile.device_kind) {
            self.refresh_devices();
        }
        if std::mem::take(&mut self.waiting_for_profile) {
            if self.profile.start_streaming && self.engine.is_none() {
                self.start();
            } else {
                self.view.state = TrayState::Idle;
                self.view.detail.clear();
            }
        } else if stream_settings_differ(&old, &self.profile) {
            self.restart_if_running();
        }
    }

    fn refresh_devices(&mut self) {
        let want_output =
            self.profile.role == Role::Client || self.profile.device_kind == DeviceKind::Output;
        self.view.devices = crate::audio::cpal_backend::list_devices(self.profile.audio_host)
            .map(|ds| {
                ds.into_iter()
                    .filter(|d| if want_output { d.output } else { d.input })
                    .map(|d| (d.id, d.name))
                    .collect()
            })
            .unwrap_or_default();
    }

    fn refresh_bans(&mut self) {
        self.view.bans = paths::ban_list_path()
            .ok()
            .and_then(|p| BanList::load(&p).ok())
            .map(|l| l.nets())
            .unwrap_or_default();
    }

    fn edit_bans(
        &mut self,
        edit: impl FnOnce(&mut BanList) -> Result<(), crate::store::StoreError>,
    ) {
        let result = paths::ban_list_path()
            .and_then(|p| BanList::load(&p))
            .and_then(|mut l| edit(&mut l));
        if let Err(e) = result {
            self.fail(format!("ban list: {e}"));
        }
        self.refresh_bans();
    }

    fn redraw(&mut self) {
        let Some(tray) = &self.tray else { return };
        let now = (
            self.view.menu(),
            self.view.icon_name(),
            self.view.status_line(),
        );
        if self.shown.as_ref() == Some(&now) {
            return;
        }
        // Only the status line's text changed (a client's live figures, every second): it
        // changes in place, so that a menu open meanwhile keeps working.
        if let (Some((items, icon, _)), Some(status), Some(Item::Label(text))) =
            (&self.shown, &self.status_item, now.0.first())
        {
            if *icon == now.1 && items.len() == now.0.len() && items[1..] == now.0[1..] {
                status.set_text(text);
                let _ = tray.set_tooltip(Some(&now.2));
                self.shown = Some(now);
                return;
            }
        }
        self.actions.clear();
        let (menu, status) = items::build_menu(&now.0, &mut self.actions);
        self.status_item = status;
        #[cfg(windows)]
        click::set_menu(tray, menu);
        #[cfg(not(windows))]
        tray.set_menu(Some(Box::new(menu)));
        if let Some(icon) = self.icons.get(now.1) {
            let _ = tray.set_icon(Some(icon.clone()));
        }
        let _ = tray.set_tooltip(Some(&now.2));
        self.shown = Some(now);
    }
}

/// Whether moving from `a` to `b` needs the stream restarted (what only the tray or the log
/// file reads does not).
fn stream_settings_differ(a: &Profile, b: &Profile) -> bool {
    let tray_only = |p: &Profile| Profile {
        autostart: false,
        start_streaming: false,
        error_log: false,
        mute: false,
        ..p.clone()
    };
    tray_only(a) != tray_only(b)
}

/// Runs the tray until Quit. Streams at once when the profile says `start_streaming`.
///
/// A profile that does not load does not stop the tray: it shows the error, tells the desktop,
/// and starts once the file is fixed.
///
/// # Errors
/// [`TrayError::NoDesktop`] when there is no desktop session (the profile's own error first,
/// if any); [`TrayError::Store`] when there is no folder for the profile.
pub fn run(profile: Result<Profile, ConfigError>, settings: Settings) -> Result<(), TrayError> {
    if !desktop_present() {
        profile?;
        return Err(TrayError::NoDesktop);
    }
    let profile_path = settings.profile_path()?;
    let (profile, profile_error) = match profile {
        Ok(p) => (p, None),
        Err(e) => (Profile::default(), Some(super::display_chain(&e))),
    };
    let event_loop = EventLoopBuilder::<UserEvent>::with_user_event().build();
    let proxy = event_loop.create_proxy();
    let menu_proxy = proxy.clone();
    MenuEvent::set_event_handler(Some(move |e: MenuEvent| {
        let _ = menu_proxy.send_event(UserEvent::Menu(e.id));
    }));
    let mut view = TrayView::new(profile.role, &profile.device);
    view.detail.clear();
    view.server_address.clone_from(&profile.server_address);
    view.muted = profile.mute;
    view.preset = Preset::of(&profile.audio);
    // Servers on the network, for the menu; where mDNS cannot run the menu says none.
    let servers_proxy = proxy.clone();
    let _servers = crate::engine::discovery::Watch::start(move |found| {
        let _ = servers_proxy.send_event(UserEvent::Servers(found));
    })
    .map_err(|e| tracing::info!("no LAN discovery (mDNS): {e}"))
    .ok();
    let _watcher = match watch_profile(&profile_path, proxy.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("profile edits will not be picked up while running: {e}");
            None
        }
    };
    let mut app = App {
        notifier: Notifier::new(),
        notices: spawn_notifier(),
        view,
        profile,
        profile_path,
        waiting_for_profile: profile_error.is_some(),
        profile_error: None,
        restart_pending: false,
        settings,
        engine: None,
        mute: None,
        mic: None,
        generation: 0,
        tray: None,
        actions: HashMap::new(),
        shown: None,
        status_item: None,
        icons: ICONS
            .iter()
            .filter_map(|(name, bytes)| decode_icon(bytes).map(|i| (*name, i)))
            .collect(),
        proxy,
    };
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            // Icons are created once the loop runs (tray-icon's rule; GTK is ready then).
            TaoEvent::NewEvents(StartCause::Init) => {
                app.refresh_devices();
                app.refresh_bans();
                let built = TrayIconBuilder::new()
                    .with_tooltip("EchoWarp")
                    .with_title("EchoWarp")
                    .with_menu_on_left_click(true)
                    .with_icon(app.icons.get("idle").cloned().unwrap_or_else(|| {
                        Icon::from_rgba(vec![0; 4], 1, 1).expect("a 1x1 icon is valid")
                    }))
                    .build();
                match built {
                    Ok(t) => {
                        #[cfg(windows)]
                        click::install(&t);
                        app.tray = Some(t);
                    }
                    Err(e) => {
                        eprintln!("error: cannot create the tray icon: {e}");
                        *control_flow = ControlFlow::ExitWithCode(1);
                        return;
                    }
                }
                tracing::info!("tray ready");
                if let Some(why) = profile_error.clone() {
                    app.fail(format!("profile error: {why}"));
                    app.profile_error = Some(why.clone());
                    app.tell(
                        "EchoWarp: profile error",
                        format!("{why}. Fix the file; EchoWarp starts when it loads."),
                    );
                } else {
                    app.apply_autostart();
                    if app.profile.start_streaming {
                        app.start();
                    }
                }
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::Menu(id)) => {
                let Some(action) = app.actions.get(&id).cloned() else {
                    return;
                };
                tracing::info!("menu: {action:?}");
                if !app.act(action) {
                    #[cfg(windows)]
                    click::forget();
                    app.tray = None;
                    *control_flow = ControlFlow::Exit;
                    return;
                }
                // A click may have ticked an entry the view then refuses: build it all again.
                app.shown = None;
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::EngineReleased) if app.restart_pending => {
                app.restart_pending = false;
                app.start();
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::Servers(found)) => {
                // Not the tray's own server.
                let own = (app.profile.role == Role::Server)
                    .then(|| crate::engine::discovery::instance_name(app.profile.port));
                app.view.servers = found
                    .into_iter()
                    .filter(|f| Some(&f.name) != own.as_ref())
                    .map(|f| (f.name, f.password))
                    .collect();
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::Answer(answer)) => {
                app.answered(answer);
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::ProfileChanged) => {
                app.reload_profile();
                app.redraw();
            }
            TaoEvent::UserEvent(UserEvent::Engine(generation, e)) => {
                if generation != app.generation {
                    return; // a stopped engine's last words
                }
                if matches!(e, Event::Stopped(_)) {
                    app.engine = None;
                }
                for notice in app.notifier.on_event(&e, std::time::Instant::now()) {
                    let _ = app.notices.send(notice);
                }
                let mut changed = app.view.apply(&e);
                if matches!(e, Event::Banned(_) | Event::BannedNetwork(_)) {
                    // The file is the truth (a hand edit may have changed it too), but the
                    // server writes it off the connection path, maybe after this event: the
                    // new ban is kept even if the file does not hold it yet.
                    app.refresh_bans();
                    app.view.apply(&e);
                    changed = true;
                }
                if changed {
                    app.redraw();
                }
            }
            _ => {}
        }
    })
}
