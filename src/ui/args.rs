//! The command line's flags (DESIGN.md §3.1): EchoWarp 0.4's in both spellings, and ours.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use super::settings::Settings;
use crate::audio::AudioHost;
use crate::engine::{Claim, Extras};
use crate::store::profile::{CodecName, Overrides};

fn parse_codec(s: &str) -> Result<CodecName, String> {
    match s {
        "pcm" => Ok(CodecName::Pcm),
        "opus" => Ok(CodecName::Opus),
        other => Err(format!("`{other}`: the codecs are pcm and opus")),
    }
}

/// The end of `--help` (and of the man page, which help2man makes from it).
const AFTER_HELP: &str = "\
With no arguments: the tray on a desktop, else interactive setup on a terminal, else headless \
from the saved profile.

Files:
  profile.toml           settings, in the config folder (~/.config/echowarp on Linux); the tray
                         picks up edits while it runs
  echowarp_ban_list.txt  banned IPs, one per line, in the data folder (~/.local/share/echowarp)
  logs/                  log files (-l), in the data folder

Exit status:
  0 done or stopped, 1 runtime error, 2 bad usage or profile, 3 wrong password (401),
  4 banned (403), 5 version mismatch (409), 6 could not connect or timed out

Examples:
  echowarp -p secret                      server: stream the default input
  echowarp -o -p secret                   server: stream what this computer plays
  echowarp -c -a 192.168.1.20 -p secret   client: play that stream";

/// Commands other than streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Subcommand {
    /// Check what streaming needs on this machine (sound server, devices, port, firewall,
    /// notifications, tray) with the settings a run would use; exit 1 when something blocks
    /// streaming
    Doctor,
}

/// EchoWarp: stream live audio from one computer to another.
#[derive(Debug, Parser, Default)]
#[command(name = "echowarp", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// Client mode: receive and play (default: server mode, capture and send)
    #[arg(short = 'c', long = "client")]
    pub client: bool,
    /// Server: capture what an output device plays; client: play on an output (always so)
    #[arg(short = 'o', long = "output")]
    pub output: bool,
    /// One port for TCP control and UDP audio [default: 4415]
    #[arg(
        short = 'u',
        long = "udp-port",
        visible_alias = "port",
        alias = "udp_port",
        value_name = "PORT"
    )]
    pub port: Option<u16>,
    /// Client: the server's host name or IP (IPv4 or IPv6)
    #[arg(
        short = 'a',
        long = "server-address",
        alias = "server_address",
        value_name = "HOST"
    )]
    pub server_address: Option<String>,
    /// Server: listen only on this address (default: all interfaces, IPv4 and IPv6)
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Device: index or name from --list-devices, default, wav:PATH, tone:HZ or null
    #[arg(
        short = 'd',
        long = "device-id",
        visible_alias = "device",
        alias = "device_id",
        value_name = "DEVICE"
    )]
    pub device: Option<String>,
    /// Shared password (never sent over the network); `-p -` reads it from a line on standard
    /// input, and without -p it is taken from ECHOWARP_PASSWORD if set
    #[arg(short = 'p', long = "password")]
    pub password: Option<crate::protocol::Password>,
    /// Server: encrypt audio (the default; accepted for compatibility)
    #[arg(long = "ssl")]
    pub ssl: bool,
    /// Server without a password: serve clients from public addresses too (else only from loopback, private, link-local, CGNAT and unique-local ones)
    #[arg(long = "allow-anonymous", alias = "allow_anonymous")]
    pub allow_anonymous: bool,
    /// Server: do not announce this server on the local network (mDNS)
    #[arg(long = "no-discovery")]
    pub no_discovery: bool,
    /// Client: play into a recording device named "EchoWarp Microphone" that other programs can pick (Linux: made for the run; Windows, macOS: a virtual cable's)
    #[arg(long = "virtual-mic")]
    pub virtual_mic: bool,
    /// List the EchoWarp servers that announce themselves on the local network and exit
    #[arg(long = "discover")]
    pub discover: bool,
    /// Server: do not encrypt audio
    #[arg(
        long = "no-encryption",
        alias = "no_encryption",
        conflicts_with = "ssl"
    )]
    pub no_encryption: bool,
    /// Server, with encryption off: a keyed BLAKE3 tag on every packet
    #[arg(short = 'i', long = "integrity-control", alias = "integrity_control")]
    pub integrity: bool,
    /// Client: attempts before giving up; server: failed logins before a ban; 0 = unlimited / never [default: 5]
    #[arg(short = 'r', long = "reconnect", value_name = "N")]
    pub reconnect: Option<u32>,
    /// Server: most clients served at once [default: 1]
    #[arg(short = 'w', long = "workers", value_name = "N")]
    pub workers: Option<u32>,
    /// UDP socket buffer in bytes (0 = OS default)
    #[arg(
        short = 'b',
        long = "socket-buffer-size",
        alias = "socket_buffer_size",
        value_name = "BYTES"
    )]
    pub socket_buffer_size: Option<u32>,
    /// Read a TOML profile (or an EchoWarp 0.4 INI .conf); flags beside it override it
    #[arg(
        short = 'f',
        long = "config-file",
        visible_alias = "profile",
        alias = "config_file",
        value_name = "PATH"
    )]
    pub config_file: Option<PathBuf>,
    /// Write the effective settings as a TOML profile (default: the profile path) and continue
    #[arg(short = 's', long = "save-config", alias = "save_config", value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub save_config: Option<String>,
    /// Also write warnings and errors to the log file
    #[arg(short = 'l', long = "is-error-log", alias = "is_error_log")]
    pub error_log: bool,
    /// Accepted for compatibility: device names are Unicode here
    #[arg(
        short = 'e',
        long = "device-encoding-names",
        alias = "device_encoding_names",
        value_name = "CHARSET"
    )]
    pub device_encoding_names: Option<String>,
    /// Accepted for compatibility: device names are Unicode here
    #[arg(
        long = "ignore-device-encoding-names",
        alias = "ignore_device_encoding_names"
    )]
    pub ignore_device_encoding_names: bool,
    /// Print input and output devices and exit
    #[arg(long = "list-devices", alias = "list_devices")]
    pub list_devices: bool,
    /// Print the ban list and exit
    #[arg(long = "bans")]
    pub bans: bool,
    /// Lift the ban of an IP (or a network, as the ban list shows it: 10.1.2.0/24) and exit
    #[arg(long = "unban", value_name = "IP", value_parser = crate::store::bans::parse_ban_entry)]
    pub unban: Option<ipnet::IpNet>,
    /// Lift every ban and exit
    #[arg(long = "clear-bans", alias = "clear_bans")]
    pub clear_bans: bool,
    /// Ask for every setting in the terminal, then run
    #[arg(short = 'I', long = "interactive")]
    pub interactive: bool,
    /// Print the effective settings as a TOML profile and exit
    #[arg(long = "show-config")]
    pub show_config: bool,
    /// Run in the system tray
    #[arg(long = "tray")]
    pub tray: bool,
    /// Server: each packet also carries the previous one, so single losses cost nothing
    #[arg(long = "redundancy")]
    pub redundancy: bool,
    /// Linux: the sound API devices are reached through: auto (PipeWire, else ALSA), pipewire,
    /// pulse (the PulseAudio protocol), alsa or jack [default: auto]
    #[arg(long = "audio-host", value_name = "HOST", value_parser = AudioHost::parse)]
    pub audio_host: Option<AudioHost>,
    /// Server: audio codec on the wire, pcm (the default, for a LAN) or opus (compressed)
    #[arg(long = "codec", value_parser = parse_codec)]
    pub codec: Option<CodecName>,
    /// Server, opus: bitrate in kbit/s [default: 128]
    #[arg(long = "bitrate", value_name = "KBPS")]
    pub bitrate: Option<u32>,
    /// Print live figures as one JSON object per line on stdout, every second
    #[arg(long = "stats-json")]
    pub stats_json: bool,
    /// Only warnings and errors
    #[arg(short = 'q', long = "quiet", conflicts_with = "verbose")]
    pub quiet: bool,
    /// Debug output
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// What to do instead of streaming.
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// Claim another protocol major version (for testing version checks)
    #[arg(long = "protocol-major", hide = true)]
    pub protocol_major: Option<u16>,
    /// Claim another protocol minor version (for testing what older peers get)
    #[arg(long = "protocol-minor", hide = true)]
    pub protocol_minor: Option<u16>,
}

impl Args {
    /// The settings these flags ask for: the profile they name and the changes they make.
    pub fn settings(&self) -> Settings {
        Settings {
            profile_file: self.config_file.clone(),
            overrides: Overrides {
                client: self.client,
                output: self.output,
                port: self.port,
                server_address: self.server_address.clone(),
                device: self.device.clone(),
                password: self.password.clone(),
                encryption: if self.no_encryption {
                    Some(false)
                } else {
                    self.ssl.then_some(true)
                },
                integrity: self.integrity,
                allow_anonymous: self.allow_anonymous,
                no_discovery: self.no_discovery,
                virtual_mic: self.virtual_mic,
                audio_host: self.audio_host,
                reconnect_attempts: self.reconnect,
                max_clients: self.workers,
                socket_buffer_size: self.socket_buffer_size,
                error_log: self.error_log,
                redundancy: self.redundancy,
                codec: self.codec,
                bitrate_kbps: self.bitrate,
            },
            extras: Extras {
                bind: self.bind,
                claim: Claim {
                    major: self.protocol_major,
                    minor: self.protocol_minor,
                },
            },
        }
    }
}
