//! The TOML profile (DESIGN.md §3.2): typed, defaulted, versioned, written atomically with
//! comments, mode 0600. A profile that fails to parse or validate is an error naming its line and
//! key; it is never silently replaced.
//!
//! The [`Profile`] struct is the schema: its keys, types and defaults. `text` writes it with a
//! comment on each key and merges changes into a user's file; `ini` reads EchoWarp 0.4's INI
//! files into it; [`Overrides`] are the changes one run makes (the command line's flags).

use std::path::Path;

use serde::{Deserialize, Serialize};

mod ini;
mod overrides;
mod text;

pub use ini::looks_like_ini;
pub use overrides::Overrides;

use super::atomic::write_atomic;
use super::StoreError;
use crate::audio::{AudioHost, DeviceKind};

/// The profile format version this build writes.
pub const PROFILE_VERSION: u32 = 1;
/// The default port for TCP control and UDP audio.
pub const DEFAULT_PORT: u16 = 4415;

/// Server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Captures and sends.
    #[default]
    Server,
    /// Receives and plays.
    Client,
}

/// Audio codec on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// 16-bit PCM.
    #[default]
    Pcm,
    /// Opus (libopus).
    Opus,
}

/// The `[audio]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioSettings {
    /// 0: the device's own rate.
    pub sample_rate: u32,
    /// 0: the device's own, at most 2.
    pub channels: u16,
    /// Codec on the wire.
    pub codec: CodecName,
    /// Audio per packet, in milliseconds.
    pub frame_ms: u32,
    /// Jitter buffer depth, in milliseconds.
    pub target_latency_ms: u32,
    /// Server, PCM: each datagram also carries the previous frame, so a single lost datagram
    /// costs nothing (frames shrink to fit two in a datagram: at most 3.2 ms of 48 kHz stereo).
    pub redundancy: bool,
    /// Server, Opus: the bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Server, Opus: in-band forward error correction (used where Opus's mode allows it).
    pub fec: bool,
}

impl Default for AudioSettings {
    fn default() -> Self {
        Self {
            sample_rate: 0,
            channels: 0,
            codec: CodecName::Pcm,
            frame_ms: 5,
            target_latency_ms: 10,
            redundancy: false,
            bitrate_kbps: 128,
            fec: true,
        }
    }
}

/// Every setting, as the profile file holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Format version.
    pub version: u32,
    /// Server or client.
    pub role: Role,
    /// TCP and UDP port.
    pub port: u16,
    /// Client: the server's host name or IP.
    pub server_address: String,
    /// Device spec, as `-d`.
    pub device: String,
    /// Input or output device.
    pub device_kind: DeviceKind,
    /// Shared password (empty for none).
    pub password: crate::protocol::Password,
    /// Server: encrypt audio.
    pub encryption: bool,
    /// Server, encryption off: tag every packet.
    pub integrity: bool,
    /// Client: attempts before giving up; server: failures before a ban (0: unlimited / never).
    pub reconnect_attempts: u32,
    /// Server: clients served at once.
    pub max_clients: u32,
    /// UDP socket buffer in bytes (0: the OS default).
    pub socket_buffer_size: u32,
    /// Write warnings and errors to the log file too.
    pub error_log: bool,
    /// Start the tray at login.
    pub autostart: bool,
    /// The tray streams as soon as it starts.
    pub start_streaming: bool,
    /// Server without a password: serve clients from public addresses too (else only from
    /// loopback, private, link-local, CGNAT and unique-local addresses).
    pub allow_anonymous: bool,
    /// Server: announce itself on the local network (mDNS) for clients to find.
    pub discovery: bool,
    /// The sending side sends silence (the tray's Mute; changed while running).
    pub mute: bool,
    /// The playing side offers "EchoWarp Microphone" to other programs.
    pub virtual_mic: bool,
    /// The sound API devices are reached through (Linux: PipeWire, PulseAudio, ALSA or JACK;
    /// `auto` elsewhere).
    pub audio_host: AudioHost,
    /// Audio format and buffering.
    pub audio: AudioSettings,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            version: PROFILE_VERSION,
            role: Role::Server,
            port: DEFAULT_PORT,
            server_address: String::new(),
            device: "default".to_owned(),
            device_kind: DeviceKind::Input,
            password: crate::protocol::Password::default(),
            encryption: true,
            integrity: false,
            reconnect_attempts: 5,
            max_clients: 1,
            socket_buffer_size: 0,
            error_log: false,
            autostart: false,
            start_streaming: true,
            allow_anonymous: false,
            discovery: true,
            mute: false,
            virtual_mic: false,
            audio_host: AudioHost::Auto,
            audio: AudioSettings::default(),
        }
    }
}

/// The 1-based line on which `key` is assigned (first match), for error messages.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key assigned on a line, if the line is `key = value`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_owned())
}

impl Profile {
    /// Parses and validates profile text.
    ///
    /// # Errors
    /// [`StoreError::Profile`] naming the line and key of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<Self, StoreError> {
        let profile: Profile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of_offset(text, s.start));
            let mut message = e.message().to_owned();
            let key = key_on_line(text, line).or_else(|| {
                // "unknown field `x`" errors name the key in the message.
                message.split('`').nth(1).map(str::to_owned)
            });
            if let Some(k) = &key {
                message = message.replace(
                    &format!("unknown field `{k}`"),
                    &format!("unknown key `{k}`"),
                );
            }
            StoreError::Profile {
                path: path.to_owned(),
                line,
                key,
                message,
            }
        })?;
        profile
            .validate()
            .map_err(|(key, message)| StoreError::Profile {
                path: path.to_owned(),
                line: line_of_key(text, key).unwrap_or(1),
                key: Some(key.to_owned()),
                message,
            })?;
        Ok(profile)
    }

    /// Checks ranges that the types alone do not.
    ///
    /// # Errors
    /// The key at fault and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.version > PROFILE_VERSION {
            return Err(("version", format!("profile version {} is newer than this EchoWarp understands ({PROFILE_VERSION})", self.version)));
        }
        if self.port == 0 {
            return Err(("port", "port must be between 1 and 65535".into()));
        }
        if self.max_clients == 0 {
            return Err(("max_clients", "at least one client must be allowed".into()));
        }
        if self.audio.channels > 2 {
            return Err((
                "channels",
                "channels must be 0 (the device's own), 1 or 2".into(),
            ));
        }
        if self.audio.sample_rate != 0 && !(8_000..=192_000).contains(&self.audio.sample_rate) {
            return Err((
                "sample_rate",
                "sample_rate must be 0 or between 8000 and 192000".into(),
            ));
        }
        if !(1..=20).contains(&self.audio.frame_ms) {
            return Err(("frame_ms", "frame_ms must be between 1 and 20".into()));
        }
        if self.audio.target_latency_ms > 2_000 {
            return Err((
                "target_latency_ms",
                "target_latency_ms must be at most 2000".into(),
            ));
        }
        if self.audio.codec == CodecName::Opus {
            if ![2, 3, 5, 10, 20].contains(&self.audio.frame_ms) {
                return Err((
                    "frame_ms",
                    "with opus, frame_ms must be 2 or 3 (2.5 ms), 5, 10 or 20".into(),
                ));
            }
            if self.audio.redundancy {
                return Err((
                    "redundancy",
                    "redundancy is for pcm; opus has fec = true instead".into(),
                ));
            }
            if !(6..=510).contains(&self.audio.bitrate_kbps) {
                return Err((
                    "bitrate_kbps",
                    "bitrate_kbps must be between 6 and 510".into(),
                ));
            }
            if ![0, 8_000, 12_000, 16_000, 24_000, 48_000].contains(&self.audio.sample_rate) {
                return Err((
                    "sample_rate",
                    "with opus, sample_rate must be 0 (48000), 8000, 12000, 16000, 24000 or 48000"
                        .into(),
                ));
            }
        }
        crate::audio::DeviceSpec::parse(&self.device).map_err(|e| ("device", e.to_string()))?;
        Ok(())
    }

    /// Reads a profile file: TOML, or an EchoWarp 0.4 INI `.conf` (recognised by its section).
    ///
    /// # Errors
    /// [`StoreError::Io`] when unreadable, [`StoreError::Profile`] when invalid.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(StoreError::io(path))?;
        if ini::looks_like_ini(&text) {
            return ini::import(&text, path);
        }
        Self::parse(&text, path)
    }

    /// Reads the profile if it exists; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// As [`Profile::load`].
    pub fn load_if_exists(path: &Path) -> Result<Option<Self>, StoreError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    /// Writes the profile atomically, mode 0600. A new file gets explanatory comments; an
    /// existing one keeps the user's layout and comments, with only the changed values replaced.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it cannot be written; [`StoreError::Profile`] when the existing
    /// file does not parse (it is never replaced: the user's edit would be lost).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(old) if ini::looks_like_ini(&old) => {
                return Err(StoreError::Profile {
                    path: path.to_owned(),
                    line: 1,
                    key: None,
                    message: "an EchoWarp 0.4 .conf is read, never rewritten; save to a .toml profile with -s".into(),
                })
            }
            Ok(old) if !old.trim().is_empty() => self.merged_into(&old, path)?,
            Ok(_) => self.to_toml(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.to_toml(),
            Err(e) => return Err(StoreError::io(path)(e)),
        };
        write_atomic(path, text.as_bytes(), true)
    }
}

#[cfg(test)]
mod tests;
