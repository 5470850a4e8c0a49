//! Front ends over the engine: the headless command line and the interactive setup.

pub mod cli;
pub mod interactive;

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
pub mod notice;
#[cfg(feature = "tray")]
pub mod tray;
pub mod tray_menu;
