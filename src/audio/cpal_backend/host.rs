//! Which cpal host devices come from (`--audio-host`).
//!
//! On Linux, `auto` is PipeWire where its daemon answers, else ALSA (whose default device on a
//! PulseAudio desktop is its `pulse` plug-in); the PulseAudio protocol and JACK only when asked
//! for. cpal's PulseAudio host asks the server for timing after every callback, which costs
//! more and delays more than the plug-in does (`bench/latency.py --route pulse-native`: 41 ms
//! and 6 % of a core per side, against 33 ms and 3 % through the plug-in). `auto` is settled
//! once per process, at the first device opened or listed: a device that goes away
//! while the sound server restarts is looked for again through the same host, not through
//! ALSA's plug-ins because PipeWire was down for a second. Elsewhere there is one host (WASAPI,
//! CoreAudio), and naming a Linux one is an error.

use std::sync::OnceLock;

use crate::audio::{AudioError, AudioHost};

/// The host for `choice`, on a thread whose ALSA and JACK messages go to our log.
///
/// # Errors
/// [`AudioError::Host`] when the host asked for is not running or not built in.
pub(super) fn host(choice: AudioHost) -> Result<cpal::Host, AudioError> {
    super::quiet::this_thread();
    if choice == AudioHost::Auto {
        return auto();
    }
    let id = host_id(choice)?;
    cpal::host_from_id(id).map_err(|e| AudioError::Host(choice.name(), e.to_string()))
}

/// The host `auto` stands for in this process, settled at the first call.
fn auto() -> Result<cpal::Host, AudioError> {
    static SETTLED: OnceLock<cpal::HostId> = OnceLock::new();
    if let Some(id) = SETTLED.get() {
        // Down for now (a sound server restarting): the caller finds no device and tries
        // again later.
        return cpal::host_from_id(*id).map_err(|e| AudioError::Host(id.name(), e.to_string()));
    }
    let h = first_choice();
    let id = *SETTLED.get_or_init(|| h.id());
    tracing::debug!("audio host: {} (auto)", id.name());
    Ok(h)
}

#[cfg(target_os = "linux")]
fn first_choice() -> cpal::Host {
    use cpal::traits::HostTrait;
    if cpal::platform::PipeWireHost::is_available() {
        if let Ok(h) = cpal::host_from_id(cpal::HostId::PipeWire) {
            return h;
        }
    }
    cpal::host_from_id(cpal::HostId::Alsa).unwrap_or_else(|_| cpal::default_host())
}

#[cfg(not(target_os = "linux"))]
fn first_choice() -> cpal::Host {
    cpal::default_host()
}

#[cfg(target_os = "linux")]
fn host_id(choice: AudioHost) -> Result<cpal::HostId, AudioError> {
    Ok(match choice {
        AudioHost::PipeWire => cpal::HostId::PipeWire,
        AudioHost::Pulse => cpal::HostId::PulseAudio,
        AudioHost::Alsa => cpal::HostId::Alsa,
        AudioHost::Jack => cpal::HostId::Jack,
        AudioHost::Auto => first_choice().id(),
    })
}

#[cfg(not(target_os = "linux"))]
fn host_id(choice: AudioHost) -> Result<cpal::HostId, AudioError> {
    match choice {
        AudioHost::Auto => Ok(cpal::default_host().id()),
        other => Err(AudioError::Host(
            other.name(),
            "Linux only: this system has one audio host, chosen by --audio-host auto".into(),
        )),
    }
}

/// Makes what the hosts read from the environment agree with the sound server's own clients;
/// to be called first thing in `main`, while it is the only thread (changing the environment
/// races with any other thread that reads it).
///
/// The PulseAudio protocol's client authenticates with a cookie, which it looks for in
/// `$PULSE_COOKIE` and under `$HOME` but not where libpulse keeps it when `XDG_CONFIG_HOME` is
/// set; without it pipewire-pulse refuses the connection ("Invalid").
pub fn prepare_environment() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("PULSE_COOKIE").is_none() {
        if let Some(config) = std::env::var_os("XDG_CONFIG_HOME") {
            let cookie = std::path::Path::new(&config).join("pulse/cookie");
            if cookie.is_file() {
                std::env::set_var("PULSE_COOKIE", cookie);
            }
        }
    }
}
