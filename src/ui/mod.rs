//! Front ends over the engine: the headless command line, the interactive setup and the tray.

mod args;
pub mod autostart;
pub mod cli;
pub mod doctor;
pub mod interactive;
pub mod notice;
pub mod preset;
pub mod settings;
mod status;
pub mod stop;
#[cfg(feature = "tray")]
pub mod tray;
pub mod tray_menu;

/// An error and all its causes, joined with ": ".
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
