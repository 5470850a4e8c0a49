//! Start at login (DESIGN.md §5): the tray registers itself with auto-launch, launching `--tray`.
//!
//! On Linux auto-launch writes `$HOME/.config/autostart/echowarp.desktop` with `Exec=<path> <args>`
//! and does not quote the path, so an install folder with a space would start `/opt/Echo` with
//! `Warp/echowarp` as an argument. We hand it a path already quoted as the Desktop Entry
//! Specification asks ([`desktop_exec_arg`]).

use std::path::Path;

/// The name auto-launch registers under (`echowarp.desktop` on Linux).
pub const APP_NAME: &str = "echowarp";
/// What the login starts.
pub const ARGS: [&str; 1] = ["--tray"];

/// Start-at-login failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutostartError {
    /// The program's own path cannot be found or written into a desktop entry.
    #[error("cannot register {0} to start at login: {1}")]
    Path(String, &'static str),
    /// This build has no tray, so nothing to start at login.
    #[error("start at login needs the tray (this build has none)")]
    NoTray,
    /// auto-launch failed (no home folder, a read-only autostart folder, ...).
    #[error("start at login: {0}")]
    Launcher(String),
}

/// One argument of a desktop entry's `Exec` key, always quoted: wrapped in double quotes with
/// `"`, `` ` ``, `$` and `\` escaped by a backslash, then the whole escaped again as a desktop
/// entry string value (so each backslash doubles) and `%` doubled (it starts field codes).
///
/// # Errors
/// Control characters (a newline would end the key) cannot be written.
pub fn desktop_exec_arg(arg: &str) -> Result<String, &'static str> {
    if arg.chars().any(char::is_control) {
        return Err("the path holds a control character");
    }
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('"');
    for c in arg.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted.replace('\\', "\\\\").replace('%', "%%"))
}

/// The path auto-launch is given for `exe`: quoted for a desktop entry on Linux, in double
/// quotes for the Run value's command line on Windows, as is elsewhere.
///
/// # Errors
/// [`AutostartError::Path`] for a path that is not UTF-8 or cannot be quoted.
pub fn launcher_path(exe: &Path) -> Result<String, AutostartError> {
    let shown = exe.display().to_string();
    let s = exe
        .to_str()
        .ok_or_else(|| AutostartError::Path(shown.clone(), "the path is not UTF-8"))?;
    if cfg!(target_os = "linux") {
        desktop_exec_arg(s).map_err(|why| AutostartError::Path(shown, why))
    } else if cfg!(windows) {
        // The Run value is a command line: a path under "Program Files" must be quoted, or
        // Windows would try "C:\Program" first. A Windows path cannot hold a double quote.
        Ok(format!("\"{s}\""))
    } else {
        Ok(s.to_owned())
    }
}

/// Splits a desktop entry's `Exec` value into arguments as a desktop session does: string
/// unescaping, `%%` to `%`, then spaces outside double quotes separate arguments and a backslash
/// inside them takes the next character literally. The inverse of [`desktop_exec_arg`], for
/// checking what was written.
pub fn parse_desktop_exec(value: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            plain.extend(chars.next());
        } else {
            plain.push(c);
        }
    }
    let plain = plain.replace("%%", "%");
    let (mut args, mut cur, mut quoted, mut it) = (Vec::new(), String::new(), false, plain.chars());
    while let Some(c) = it.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => cur.extend(it.next()),
            ' ' if !quoted => args.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    args.push(cur);
    args
}

#[cfg(feature = "tray")]
fn launcher() -> Result<auto_launch::AutoLaunch, AutostartError> {
    let exe = std::env::current_exe()
        .map_err(|e| AutostartError::Launcher(format!("cannot find this program: {e}")))?;
    auto_launch::AutoLaunchBuilder::new()
        .set_app_name(APP_NAME)
        .set_app_path(&launcher_path(&exe)?)
        .set_args(&ARGS)
        // HKCU's Run key only: the login of the user who asked, never every user's (HKLM).
        .set_windows_enable_mode(auto_launch::WindowsEnableMode::CurrentUser)
        .build()
        .map_err(|e| AutostartError::Launcher(e.to_string()))
}

/// Whether the login starts the tray.
///
/// # Errors
/// [`AutostartError`] when the state cannot be read.
pub fn is_enabled() -> Result<bool, AutostartError> {
    #[cfg(feature = "tray")]
    {
        launcher()?
            .is_enabled()
            .map_err(|e| AutostartError::Launcher(e.to_string()))
    }
    #[cfg(not(feature = "tray"))]
    Err(AutostartError::NoTray)
}

/// Turns start at login on (re-registering this program's current path) or off.
///
/// # Errors
/// [`AutostartError`] when auto-launch cannot write or remove its entry.
pub fn set(on: bool) -> Result<(), AutostartError> {
    #[cfg(feature = "tray")]
    {
        let l = launcher()?;
        let result = if on {
            l.enable()
        } else if l
            .is_enabled()
            .map_err(|e| AutostartError::Launcher(e.to_string()))?
        {
            l.disable()
        } else {
            Ok(())
        };
        result.map_err(|e| AutostartError::Launcher(e.to_string()))
    }
    #[cfg(not(feature = "tray"))]
    {
        let _ = on;
        Err(AutostartError::NoTray)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_paths_survive_spaces_and_specials() {
        for path in [
            "/usr/bin/echowarp",
            "/opt/Echo Warp/bin/echowarp",
            "/home/a\"b/$HOME/`x`/100%/back\\slash/echowarp",
        ] {
            let quoted = desktop_exec_arg(path).expect("quotable");
            assert_eq!(
                parse_desktop_exec(&format!("{quoted} --tray")),
                [path, "--tray"],
                "{quoted}"
            );
        }
        assert_eq!(
            desktop_exec_arg("/opt/Echo Warp/echowarp").expect("ok"),
            "\"/opt/Echo Warp/echowarp\""
        );
        assert!(desktop_exec_arg("/tmp/new\nline").is_err());
    }
}
