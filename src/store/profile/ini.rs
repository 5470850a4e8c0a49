//! Import of EchoWarp 0.4 INI profiles (`[echowarp_conf]`, `key=value`).

use std::path::Path;

use super::{Profile, Role};
use crate::audio::DeviceKind;
use crate::store::StoreError;

/// The section EchoWarp 0.4 writes.
pub const SECTION: &str = "[echowarp_conf]";

/// Whether the text is an EchoWarp 0.4 INI profile.
pub fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        == Some(SECTION)
}

/// Converts an EchoWarp 0.4 INI profile into a [`Profile`].
///
/// # Errors
/// [`StoreError::Profile`] naming the line and key of an unknown key or a bad value.
pub fn import(text: &str, path: &Path) -> Result<Profile, StoreError> {
    let mut p = Profile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line == SECTION {
            continue;
        }
        let err = |key: &str, message: String| StoreError::Profile {
            path: path.to_owned(),
            line: i + 1,
            key: (!key.is_empty()).then(|| key.to_owned()),
            message,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("", format!("expected key=value, found {line:?}")))?;
        let (key, value) = (key.trim(), value.trim());
        let boolean = || match value.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(err(key, format!("value {value:?} must be True or False"))),
        };
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| err(key, format!("value {value:?} must be a whole number")))
        };
        match key {
            "is_server" => {
                p.role = if boolean()? {
                    Role::Server
                } else {
                    Role::Client
                }
            }
            "is_input_audio_device" => {
                p.device_kind = if boolean()? {
                    DeviceKind::Input
                } else {
                    DeviceKind::Output
                }
            }
            "udp_port" => {
                p.port = u16::try_from(number()?)
                    .ok()
                    .filter(|&v| v != 0)
                    .ok_or_else(|| err(key, "port must be between 1 and 65535".into()))?
            }
            "socket_buffer_size" => p.socket_buffer_size = number()?,
            "device_id" => p.device = number()?.to_string(),
            "password" => p.password = value.into(),
            "server_address" => p.server_address = value.to_owned(),
            "reconnect_attempt" => p.reconnect_attempts = number()?,
            "is_ssl" => p.encryption = boolean()?,
            "is_integrity_control" => p.integrity = boolean()?,
            "workers" => p.max_clients = number()?.max(1),
            "is_error_log" => p.error_log = boolean()?,
            // Device names are Unicode here; the charset settings have nothing left to do.
            "device_encoding_names" | "ignore_device_encoding_names" => {}
            _ => {
                return Err(err(
                    key,
                    format!("unknown key `{key}` in an EchoWarp 0.4 profile"),
                ))
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the EchoWarp 0.4 README.
    const README_EXAMPLE: &str = "[echowarp_conf]\nis_server=False\nudp_port=6532\nsocket_buffer_size=10240\ndevice_id=1\npassword=mysecretpassword\ndevice_encoding_names=cp1251\nis_error_log=True\nserver_address=192.168.1.5\nreconnect_attempt=15\nis_ssl=True\nis_integrity_control=True\n";

    #[test]
    fn readme_example_loads() {
        assert!(looks_like_ini(README_EXAMPLE));
        let p = import(README_EXAMPLE, Path::new("config.conf")).expect("imports");
        assert_eq!(p.role, Role::Client);
        assert_eq!(p.port, 6532);
        assert_eq!(p.socket_buffer_size, 10240);
        assert_eq!(p.device, "1");
        assert_eq!(p.password.expose(), "mysecretpassword");
        assert_eq!(p.server_address, "192.168.1.5");
        assert_eq!(p.reconnect_attempts, 15);
        assert!(p.error_log && p.encryption && p.integrity);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = import("[echowarp_conf]\nudp_port=x\n", Path::new("c.conf")).expect_err("bad port");
        assert!(e.to_string().contains("line 2, key `udp_port`"), "{e}");
        let e = import("[echowarp_conf]\nbogus=1\n", Path::new("c.conf")).expect_err("unknown");
        assert!(e.to_string().contains("key `bogus`"), "{e}");
    }
}
