//! The profile as text: a new file written with a comment on every key, or a user's file with
//! only the changed values replaced.
//!
//! The keys and their types are the [`Profile`] struct's alone; [`KEYS`] adds what each line
//! says to a reader, in the order written. A test checks that the two name the same keys.

use std::path::Path;

use super::{line_of_offset, Profile};
use crate::store::StoreError;

/// Every key a written profile holds, as `table.key`, in the order written, with the comment
/// written beside it.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("version", ""),
    ("role", "\"server\" captures and sends; \"client\" receives and plays"),
    ("port", "TCP control and UDP audio"),
    ("server_address", "client: the server's host name or IP"),
    ("device", "index from --list-devices, a name, default, wav:PATH, tone:HZ or null"),
    ("device_kind", "\"input\", or \"output\" (server: capture what it plays)"),
    ("password", "shared password; never sent over the network"),
    ("encryption", "server: encrypt audio (ChaCha20-Poly1305)"),
    ("integrity", "server, encryption off: tag every packet (keyed BLAKE3)"),
    ("reconnect_attempts", "client: attempts before giving up; server: failed logins before a ban; 0 = unlimited / never"),
    ("max_clients", "server: clients served at once"),
    ("socket_buffer_size", "UDP socket buffer in bytes; 0 = the OS default"),
    ("error_log", "also write warnings and errors to the log file"),
    ("autostart", "start the tray at login"),
    ("start_streaming", "the tray streams as soon as it starts"),
    ("allow_anonymous", "server without a password: serve public addresses too (else local networks only)"),
    ("discovery", "server: announce itself on the local network (mDNS) for clients to find"),
    ("mute", "the sending side sends silence (the tray's Mute)"),
    ("virtual_mic", "client: play into \"EchoWarp Microphone\", a recording device other programs pick"),
    ("audio_host", "Linux: \"auto\" (PipeWire, else ALSA), \"pipewire\", \"pulse\", \"alsa\" or \"jack\""),
    ("audio.sample_rate", "0 = the device's own rate"),
    ("audio.channels", "0 = the device's own, at most 2"),
    ("audio.codec", "\"pcm\", or \"opus\" (compressed: for Wi-Fi, VPNs, the internet)"),
    ("audio.frame_ms", "audio per packet"),
    ("audio.target_latency_ms", "jitter buffer floor; it grows on a bad network and shrinks back"),
    ("audio.redundancy", "server, pcm: each packet also carries the previous one (lossy links)"),
    ("audio.bitrate_kbps", "server, opus: kbit/s"),
    ("audio.fec", "server, opus: in-band forward error correction"),
];

/// The column where a written line's comment starts.
const COMMENT_COLUMN: usize = 32;

impl Profile {
    /// The profile as commented TOML.
    pub fn to_toml(&self) -> String {
        let values = table(self);
        let mut out = String::from(
            "# EchoWarp profile. Edit freely: the running program picks up changes.\n\
             # Keys left out take their defaults; see `echowarp --help`.\n",
        );
        let mut section = "";
        for (path, comment) in KEYS {
            let (table_name, key) = path.rsplit_once('.').unwrap_or(("", path));
            let value = if table_name.is_empty() {
                values.get(key)
            } else {
                values
                    .get(table_name)
                    .and_then(toml::Value::as_table)
                    .and_then(|t| t.get(key))
            };
            // Every key is serialised (a test checks); one that were not is left to its default.
            let Some(value) = value else { continue };
            if table_name != section {
                out.push_str(&format!("\n[{table_name}]\n"));
                section = table_name;
            }
            let line = format!("{key} = {value}");
            if comment.is_empty() {
                out.push_str(&line);
            } else {
                out.push_str(&format!("{line:<COMMENT_COLUMN$} # {comment}"));
            }
            out.push('\n');
        }
        out
    }

    /// `old` (a valid profile) with the values that differ from `self` replaced in place:
    /// comments, order and spacing stay as the user left them; keys the file lacked are added.
    pub(super) fn merged_into(&self, old: &str, path: &Path) -> Result<String, StoreError> {
        let before = Self::parse(old, path)?;
        let mut doc: toml_edit::DocumentMut =
            old.parse()
                .map_err(|e: toml_edit::TomlError| StoreError::Profile {
                    path: path.to_owned(),
                    line: e.span().map_or(1, |s| line_of_offset(old, s.start)),
                    key: None,
                    message: e.message().to_owned(),
                })?;
        merge_changed(doc.as_table_mut(), &table(self), &table(&before));
        Ok(doc.to_string())
    }
}

/// The profile's keys and values as a TOML table.
pub(super) fn table(p: &Profile) -> toml::Table {
    match toml::Value::try_from(p) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// Sets in `doc` every value of `new` that differs from `prev`, keeping each value's decoration
/// (the spacing and trailing comment around it).
fn merge_changed(doc: &mut dyn toml_edit::TableLike, new: &toml::Table, prev: &toml::Table) {
    for (key, value) in new {
        if prev.get(key) == Some(value) {
            continue;
        }
        if let toml::Value::Table(sub_new) = value {
            let empty = toml::Table::new();
            let sub_prev = prev
                .get(key)
                .and_then(toml::Value::as_table)
                .unwrap_or(&empty);
            if doc.get(key).is_none() {
                doc.insert(key, toml_edit::Item::Table(toml_edit::Table::new()));
            }
            if let Some(sub) = doc
                .get_mut(key)
                .and_then(toml_edit::Item::as_table_like_mut)
            {
                merge_changed(sub, sub_new, sub_prev);
            }
            continue;
        }
        // Scalars print as valid TOML values, so this parse cannot fail for them.
        let Ok(mut fresh) = value.to_string().parse::<toml_edit::Value>() else {
            continue;
        };
        match doc.get_mut(key).and_then(toml_edit::Item::as_value_mut) {
            Some(slot) => {
                *fresh.decor_mut() = slot.decor().clone();
                *slot = fresh;
            }
            None => {
                doc.insert(key, toml_edit::Item::Value(fresh));
            }
        }
    }
}
