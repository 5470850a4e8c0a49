//! Settings given for one run (the command line's flags) over a profile read from disk.

use super::{CodecName, Profile, Role};
use crate::audio::{AudioHost, DeviceKind};
use crate::protocol::Password;

/// What to change in a profile for this run; `None` or `false`: keep the profile's value. Kept
/// apart from the profile so that a front end that reloads the file (the tray) applies the same
/// changes again.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Be the client.
    pub client: bool,
    /// Capture (or list) output devices.
    pub output: bool,
    /// `port`.
    pub port: Option<u16>,
    /// `server_address`.
    pub server_address: Option<String>,
    /// `device`.
    pub device: Option<String>,
    /// `password`.
    pub password: Option<Password>,
    /// `encryption`: on (`Some(true)`) or off.
    pub encryption: Option<bool>,
    /// `integrity` on.
    pub integrity: bool,
    /// `allow_anonymous` on.
    pub allow_anonymous: bool,
    /// `discovery` off.
    pub no_discovery: bool,
    /// `virtual_mic` on.
    pub virtual_mic: bool,
    /// `audio_host`.
    pub audio_host: Option<AudioHost>,
    /// `reconnect_attempts`.
    pub reconnect_attempts: Option<u32>,
    /// `max_clients`.
    pub max_clients: Option<u32>,
    /// `socket_buffer_size`.
    pub socket_buffer_size: Option<u32>,
    /// `error_log` on.
    pub error_log: bool,
    /// `[audio] redundancy` on.
    pub redundancy: bool,
    /// `[audio] codec`.
    pub codec: Option<CodecName>,
    /// `[audio] bitrate_kbps`.
    pub bitrate_kbps: Option<u32>,
}

impl Overrides {
    /// Applies the changes to `p`.
    pub fn apply(&self, p: &mut Profile) {
        if self.client {
            p.role = Role::Client;
        }
        if self.output {
            p.device_kind = DeviceKind::Output;
        }
        set(&mut p.port, self.port);
        set(&mut p.server_address, self.server_address.clone());
        set(&mut p.device, self.device.clone());
        set(&mut p.password, self.password.clone());
        set(&mut p.encryption, self.encryption);
        p.integrity |= self.integrity;
        p.allow_anonymous |= self.allow_anonymous;
        p.discovery &= !self.no_discovery;
        p.virtual_mic |= self.virtual_mic;
        set(&mut p.audio_host, self.audio_host);
        set(&mut p.reconnect_attempts, self.reconnect_attempts);
        set(&mut p.max_clients, self.max_clients);
        set(&mut p.socket_buffer_size, self.socket_buffer_size);
        p.error_log |= self.error_log;
        p.audio.redundancy |= self.redundancy;
        set(&mut p.audio.codec, self.codec);
        set(&mut p.audio.bitrate_kbps, self.bitrate_kbps);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_given_changes() {
        let mut p = Profile {
            port: 5000,
            encryption: true,
            ..Profile::default()
        };
        let before = p.clone();
        Overrides::default().apply(&mut p);
        assert_eq!(p, before);
        Overrides {
            client: true,
            encryption: Some(false),
            codec: Some(CodecName::Opus),
            ..Overrides::default()
        }
        .apply(&mut p);
        assert_eq!(
            (p.role, p.port, p.encryption, p.audio.codec),
            (Role::Client, 5000, false, CodecName::Opus)
        );
    }
}
