//! `echowarp`: parse the command line, pick the front end, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use echowarp::audio::virtual_mic::VirtualMic;
use echowarp::engine::Outcome;
use echowarp::store::paths;
use echowarp::store::profile::Role;
use echowarp::ui::cli::{self, Args, CliError};
use echowarp::ui::interactive;

fn init_logging(
    args: &Args,
    error_log: bool,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    let level = if args.quiet {
        "warn"
    } else if args.verbose {
        "debug"
    } else {
        "info"
    };
    // libjack's messages reach `log` through cpal's JACK host; like ALSA's (quiet.rs), they
    // are shown with -v only.
    let jack = if args.verbose { "info" } else { "off" };
    let filter = EnvFilter::try_from_env("ECHOWARP_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,echowarp={level},jack={jack}")));
    let console = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .with_filter(filter);
    let (file, guard) = match (error_log, paths::log_dir()) {
        (true, Ok(dir)) => {
            let appender = tracing_appender::rolling::daily(dir, "echowarp.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
            (Some(layer), Some(guard))
        }
        _ => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file)
        .try_init();
    guard
}

fn device_lines(host: echowarp::audio::AudioHost) -> Vec<String> {
    echowarp::audio::cpal_backend::list_devices(host)
        .map(|ds| {
            ds.into_iter()
                .map(|d| format!("{:>3}  {}  {}", d.index, d.id, d.name))
                .collect()
        })
        .unwrap_or_default()
}

fn run(mut args: Args, no_args: bool) -> Result<Outcome, CliError> {
    args.password = cli::password_from(&args, &mut std::io::stdin().lock())?;
    if args.device_encoding_names.is_some() || args.ignore_device_encoding_names {
        eprintln!("note: device names are Unicode in this EchoWarp; -e and --ignore-device-encoding-names have no effect");
    }
    if cli::run_admin(&args)? {
        return Ok(Outcome::Stopped);
    }
    let settings = args.settings();
    let profile = settings.profile();
    #[cfg(feature = "tray")]
    if args.tray || (no_args && echowarp::ui::tray::desktop_present()) {
        // The tray shows a bad profile and waits for a fix instead of exiting.
        echowarp::ui::tray::run(profile, settings)?;
        return Ok(Outcome::Stopped);
    }
    let mut profile = profile?;
    #[cfg(not(feature = "tray"))]
    if args.tray {
        return Err(CliError {
            code: cli::EXIT_USAGE,
            message: "this build has no tray (built without the `tray` feature); run headless"
                .into(),
            hints: Vec::new(),
        });
    }
    let interactive = args.interactive || (no_args && std::io::stdin().is_terminal());
    let mut save_to = args.save_config.clone();
    if interactive {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stdout();
        // On a terminal the password is typed with echo off; piped input is read as it comes.
        let mut hidden = || rpassword::read_password().map(Some);
        let secret: Option<interactive::SecretReader> = if std::io::stdin().is_terminal() {
            Some(&mut hidden)
        } else {
            None
        };
        let devices = device_lines(profile.audio_host);
        match interactive::setup(profile, &mut input, &mut out, secret, &devices) {
            Ok(Some(choice)) => {
                profile = choice.profile;
                if choice.save && save_to.is_none() {
                    save_to = Some(String::new());
                }
            }
            Ok(None) => {
                eprintln!("setup ended (end of input); nothing was saved or started");
                return Ok(Outcome::Stopped);
            }
            Err(e) => {
                return Err(CliError {
                    code: 1,
                    message: format!("terminal: {e}"),
                    hints: Vec::new(),
                })
            }
        }
    }
    if let Some(target) = &save_to {
        let path = cli::save_profile(&profile, target)?;
        eprintln!("settings saved to {}", path.display());
    }
    if args.show_config {
        print!("{}", profile.to_toml());
        return Ok(Outcome::Stopped);
    }
    // The playing side's virtual microphone: made for this run, removed when it ends.
    let _mic = if profile.virtual_mic && profile.role == Role::Client {
        let mic = VirtualMic::create().map_err(|e| CliError {
            code: 1,
            message: format!("virtual microphone: {e}"),
            hints: Vec::new(),
        })?;
        profile.device.clone_from(&mic.device);
        Some(mic)
    } else {
        None
    };
    let config = settings.config(&profile)?;
    cli::run_engine(config, args.quiet, args.stats_json)
}

fn main() -> ExitCode {
    // First, while this is the only thread: the environment may be changed only here.
    echowarp::audio::cpal_backend::prepare_environment();
    let no_args = std::env::args_os().len() == 1;
    let args = Args::parse();
    let error_log = args.error_log;
    let _guard = init_logging(&args, error_log);
    if args.command == Some(cli::Subcommand::Doctor) {
        return match cli::run_doctor(&args) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {}", e.message);
                ExitCode::from(u8::try_from(e.code).unwrap_or(1))
            }
        };
    }
    match run(args, no_args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            for h in &e.hints {
                eprintln!("  - {h}");
            }
            ExitCode::from(u8::try_from(e.code).unwrap_or(1))
        }
    }
}
