//! The command line (DESIGN.md §3.1): EchoWarp 0.4's flags in both spellings, settings layered
//! as defaults < profile < flags, exit codes that name the problem and the remedy.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::engine::{Config, ConfigError, EngineError, EngineHandle, Event, Outcome};
use crate::protocol::Password;
use crate::store::bans::BanList;
use crate::store::paths;
use crate::store::profile::Profile;
use crate::store::StoreError;

/// Exit code: bad usage or a bad profile.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: a runtime error.
pub const EXIT_RUNTIME: i32 = 1;

/// The process exit code for an engine's error (DESIGN.md §3.1): 3 wrong password, 4 banned
/// (or a password required), 5 version mismatch, 6 no connection; else 1.
pub fn exit_code(e: &EngineError) -> i32 {
    match e {
        EngineError::Unauthorized | EngineError::NotConfirmed(_) => 3,
        EngineError::Banned | EngineError::PasswordRequired => 4,
        EngineError::VersionMismatch { .. } => 5,
        EngineError::ConnectFailed { .. } => 6,
        EngineError::Config(e) if !matches!(**e, ConfigError::Store(_)) => EXIT_USAGE,
        _ => EXIT_RUNTIME,
    }
}

pub use super::args::{Args, Subcommand};
use super::status::{print_stats_json, status_text};

/// Why the command line failed: carries its exit code.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: i32,
    /// What to print after `error: `.
    pub message: String,
    /// Extra lines: what to try.
    pub hints: Vec<String>,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_RUNTIME,
            message: message.into(),
            hints: Vec::new(),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let code = if matches!(e, StoreError::Profile { .. }) {
            EXIT_USAGE
        } else {
            EXIT_RUNTIME
        };
        Self {
            code,
            message: super::display_chain(&e),
            hints: Vec::new(),
        }
    }
}

#[cfg(feature = "tray")]
impl From<super::tray::TrayError> for CliError {
    fn from(e: super::tray::TrayError) -> Self {
        use super::tray::TrayError;
        match e {
            TrayError::NoDesktop => Self::usage(e.to_string()),
            TrayError::Profile(e) => e.into(),
            TrayError::Store(e) => e.into(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Store(e) => e.into(),
            e => Self::usage(e.to_string()),
        }
    }
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        let hints = match &e {
            EngineError::Unauthorized => vec!["check the password (-p) on both sides".into()],
            EngineError::NotConfirmed(_) => vec![
                "check the password (-p) on both sides".into(),
                "check the server address (-a): is it your EchoWarp server?".into(),
                "this is not retried: each attempt would let a rogue server test one more password guess".into(),
            ],
            EngineError::Banned => {
                vec!["ask the server's owner to run `echowarp --unban <your IP>`".into()]
            }
            EngineError::PasswordRequired => vec![
                "the server has no password, so it serves only its local networks (loopback, private, link-local, CGNAT/tailnet, unique-local addresses)".into(),
                "set the same password on both sides (-p), or start the server with --allow-anonymous".into(),
            ],
            EngineError::VersionMismatch { .. } => {
                vec!["install the same EchoWarp release on both computers".into()]
            }
            EngineError::ConnectFailed { .. } => vec![
                "is the EchoWarp server running?".into(),
                "is the server address (-a) right?".into(),
                "do both sides use the same port (-u)?".into(),
                "does a firewall on the server allow TCP and UDP on that port?".into(),
                "on a VPN, is the server reachable through it (try pinging it)?".into(),
            ],
            _ => Vec::new(),
        };
        Self {
            code: exit_code(&e),
            message: super::display_chain(&e),
            hints,
        }
    }
}

/// Where a password given outside the profile comes from, the first that is set: `-p`, where
/// `-p -` reads one line from `stdin` (so that it stays out of the process list and the shell's
/// history), then the `ECHOWARP_PASSWORD` environment variable. Called once at start, its
/// answer replaces `args.password`, so a profile reloaded later does not read again.
///
/// # Errors
/// [`CliError`] (exit 2) when `-p -` finds no line or the variable is not valid Unicode.
pub fn password_from(args: &Args, stdin: &mut dyn BufRead) -> Result<Option<Password>, CliError> {
    match &args.password {
        Some(p) if p.expose() == "-" => {
            // Room for any sane password, so that reading does not reallocate and leave a copy.
            let mut line = Zeroizing::new(String::with_capacity(1024));
            let n = stdin
                .read_line(&mut line)
                .map_err(|e| CliError::usage(format!("-p -: reading standard input: {e}")))?;
            if n == 0 {
                return Err(CliError::usage(
                    "-p -: standard input ended before a line with the password",
                ));
            }
            let end = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(end);
            Ok(Some(Password::new(std::mem::take(&mut *line))))
        }
        Some(p) => Ok(Some(p.clone())),
        None => match std::env::var(PASSWORD_ENV) {
            Ok(v) => Ok(Some(Password::new(v))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(CliError::usage(format!(
                "{PASSWORD_ENV} is not valid Unicode"
            ))),
        },
    }
}

/// `echowarp doctor`: checks with the settings a run would use, prints each, and says whether
/// something blocks streaming (exit status 1).
///
/// # Errors
/// [`CliError`] when the report cannot be written.
pub fn run_doctor(args: &Args) -> Result<bool, CliError> {
    let findings = super::doctor::examine(args.settings().profile(), args.bind);
    super::doctor::report(&findings, &mut std::io::stdout().lock())
        .map_err(|e| CliError::runtime(format!("writing the report: {e}")))
}

/// How long `--discover` listens for servers' answers.
const DISCOVER_FOR: Duration = Duration::from_secs(3);

/// The environment variable a password can come from (after `-p`, before the profile).
pub const PASSWORD_ENV: &str = "ECHOWARP_PASSWORD";

/// Runs one of the list/ban commands if asked; `Ok(true)` when one ran.
///
/// # Errors
/// [`CliError`] when the devices or the ban list cannot be read or written.
pub fn run_admin(args: &Args) -> Result<bool, CliError> {
    if args.list_devices {
        // The host asked for, else the profile's (a profile that cannot be read is said when
        // something runs with it; listing does not need the rest of it).
        let host = args
            .audio_host
            .or_else(|| args.settings().profile().ok().map(|p| p.audio_host))
            .unwrap_or_default();
        let devices = crate::audio::cpal_backend::list_devices(host)
            .map_err(|e| CliError::runtime(super::display_chain(&e)))?;
        // WASAPI's ids are 60 characters, ALSA's a dozen: the column fits the longest.
        let id_width = devices
            .iter()
            .map(|d| d.id.chars().count())
            .max()
            .unwrap_or(0)
            .max(2);
        println!(
            "{:>5}  {:<6} {:<id_width$} {:<9} {:>3}  {:<13} name",
            "index", "kind", "id", "default", "ch", "rates (Hz)"
        );
        let mut cables = Vec::new();
        for d in devices {
            let kind = match (d.input, d.output) {
                (true, true) => "in+out",
                (true, false) => "input",
                _ => "output",
            };
            let default = match (d.default_input, d.default_output) {
                (true, true) => "in+out",
                (true, false) => "input",
                (false, true) => "output",
                _ => "",
            };
            let rates = if d.rates.0 == d.rates.1 {
                d.rates.0.to_string()
            } else {
                format!("{}-{}", d.rates.0, d.rates.1)
            };
            let cable = crate::audio::cable::playback_end(&d.name, d.output);
            println!(
                "{:>5}  {kind:<6} {:<id_width$} {default:<9} {:>3}  {rates:<13} {}{}",
                d.index,
                d.id,
                d.max_channels,
                d.name,
                if cable.is_some() { "  *" } else { "" }
            );
            if let Some(c) = cable {
                cables.push(format!(
                    "  * {}: {}",
                    d.index,
                    crate::audio::cable::note(&c)
                ));
            }
        }
        if !cables.is_empty() {
            println!("\nvirtual cables (a client plays into one, a game records the other end):");
            for line in cables {
                println!("{line}");
            }
        }
        println!("\nalso: default, wav:PATH, tone:HZ (server), null");
        return Ok(true);
    }
    if args.discover {
        eprintln!(
            "looking for EchoWarp servers on the local network for {} s ...",
            DISCOVER_FOR.as_secs()
        );
        let found = crate::engine::discovery::discover(DISCOVER_FOR)
            .map_err(|e| CliError::runtime(format!("LAN discovery (mDNS): {e}")))?;
        if found.is_empty() {
            println!("no EchoWarp server answered (a server announces itself unless run with --no-discovery)");
        }
        for f in found {
            let addrs: Vec<String> = f.addrs.iter().map(ToString::to_string).collect();
            println!(
                "{}\t{} port {}\tprotocol {}, {}, {}",
                f.name,
                addrs.join(", "),
                f.port,
                f.version,
                f.direction,
                if f.password {
                    "password"
                } else {
                    "no password"
                }
            );
        }
        return Ok(true);
    }
    if args.bans || args.unban.is_some() || args.clear_bans {
        let mut list = BanList::load(&paths::ban_list_path()?)?;
        if let Some(entry) = args.unban {
            let ip = if entry.prefix_len() == entry.max_prefix_len() {
                entry.addr().to_string()
            } else {
                entry.to_string()
            };
            if list.remove_entry(&entry)? {
                println!("unbanned {ip}");
            } else {
                println!("{ip} was not banned");
            }
        }
        if args.clear_bans {
            let n = list.clear()?;
            println!("cleared {n} ban{}", if n == 1 { "" } else { "s" });
        }
        if args.bans {
            let entries = list.entries();
            if entries.is_empty() {
                println!("no banned clients ({})", list.path().display());
            }
            for entry in entries {
                println!("{entry}");
            }
        }
        return Ok(true);
    }
    Ok(false)
}

/// Writes the profile for `--save-config [PATH]`.
///
/// # Errors
/// [`CliError`] when it cannot be written.
pub fn save_profile(p: &Profile, target: &str) -> Result<PathBuf, CliError> {
    let path = if target.is_empty() {
        paths::profile_path()?
    } else {
        PathBuf::from(target)
    };
    p.save(&path)?;
    Ok(path)
}

/// Runs the engine until it stops, Ctrl-C or SIGTERM arrives, printing a status line.
///
/// # Errors
/// [`CliError`] carrying the exit code of DESIGN.md §3.1.
pub fn run_engine(config: Config, quiet: bool, stats_json: bool) -> Result<Outcome, CliError> {
    let client = !config.listens();
    let handle = EngineHandle::start(config)?;
    // Ctrl-C, SIGTERM (and a console close on Windows) stop the engine from a thread of their
    // own: this thread only wakes for the engine's events.
    let stop_guard = super::stop::install(handle.sender()).map_err(CliError::runtime)?;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut line_shown = false;
    let started = Instant::now();
    let result = loop {
        match handle.events().recv() {
            Ok(Event::Stopped(r)) => break r,
            Ok(Event::Stats(s)) if stats_json || !quiet => {
                if stats_json {
                    print_stats_json(&s, client, started.elapsed());
                }
                if quiet {
                    continue;
                }
                let text = status_text(&s, client);
                if tty {
                    eprint!("\r\x1b[2K{text}");
                    line_shown = true;
                } else if last_line.elapsed() >= Duration::from_secs(10) {
                    last_line = Instant::now();
                    eprintln!("status: {text}");
                }
            }
            Ok(Event::Listening(addr)) => tracing::info!("listening on {addr}"),
            Ok(Event::AuthFailed {
                ip,
                count,
                threshold,
            }) => {
                let limit = if threshold == 0 {
                    "bans are off".to_owned()
                } else {
                    format!("{count} of {threshold} before a ban")
                };
                tracing::warn!("failed login from {ip} ({limit})");
            }
            Ok(Event::Connecting { attempt, of }) if attempt > 1 => {
                let of = if of == 0 {
                    "unlimited".to_owned()
                } else {
                    of.to_string()
                };
                tracing::info!("connecting (attempt {attempt} of {of})");
            }
            Ok(_) => {}
            Err(crossbeam_channel::RecvError) => {
                break Err(EngineError::Vanished);
            }
        }
    };
    if line_shown {
        eprintln!();
    }
    drop(handle);
    drop(stop_guard);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{ClientHandshake, ServerHandshake};
    use crate::store::profile::Role;
    use crate::ui::interactive;
    use clap::Parser;

    const CANARY: &str = "hunter2-canary";

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["echowarp", "-p", CANARY];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("valid arguments")
    }

    #[test]
    fn no_config_or_profile_type_prints_the_password() {
        let mut shown = Vec::new();
        for role in [Role::Server, Role::Client] {
            let a = args(&["-a", "host.lan"]);
            let p = Profile {
                role,
                server_address: "host.lan".into(),
                device: "null".into(),
                password: Password::from(CANARY),
                ..Profile::default()
            };
            shown.push(format!("{a:?}"));
            shown.push(format!("{p:?}"));
            shown.push(format!("{:?}", a.settings().config(&p).expect("runs")));
        }
        let choice = interactive::setup(
            Profile::default(),
            &mut format!("server\n\n\n\n{CANARY}\n\n\n\n\n\n").as_bytes(),
            &mut Vec::new(),
            None,
            &[],
        )
        .expect("no I/O error")
        .expect("completed");
        assert_eq!(choice.profile.password.expose(), CANARY);
        shown.push(format!("{choice:?}"));
        let (client, _) = ClientHandshake::start(CANARY, "a\n", "b\n");
        shown.push(format!("{client:?}"));
        shown.push(format!("{:?}", ServerHandshake::new(CANARY, "a\n", "b\n")));
        for text in &shown {
            assert!(!text.contains(CANARY), "{text}");
        }
        assert!(shown[0].contains("[redacted]"), "{}", shown[0]);
    }

    #[test]
    fn a_password_comes_from_the_flag_a_line_of_stdin_or_the_environment() {
        let none: &[u8] = b"";
        let got = |a: &Args, mut stdin: &[u8]| {
            password_from(a, &mut stdin).map(|p| p.map(|p| p.expose().to_owned()))
        };
        assert_eq!(got(&args(&[]), none).ok(), Some(Some(CANARY.to_owned())));
        let dash = Args::try_parse_from(["echowarp", "-p", "-"]).expect("valid");
        assert_eq!(
            got(&dash, b"from stdin\r\nnot this\n").ok(),
            Some(Some("from stdin".to_owned()))
        );
        assert_eq!(
            got(&dash, b"last line").ok(),
            Some(Some("last line".to_owned()))
        );
        let err = got(&dash, none).expect_err("no line");
        assert_eq!(err.code, EXIT_USAGE);
        assert!(err.message.contains("-p -"), "{}", err.message);
    }
}
