//! The playing side's virtual microphone: a recording device named "EchoWarp Microphone" that
//! any application can pick, holding what the client plays (issue 20, point 2).
//!
//! On Linux it is made through the sound server's PulseAudio interface (pipewire-pulse or
//! PulseAudio itself, with `pactl`): a null sink that EchoWarp plays into, and a source remapped
//! from its monitor that carries the name. Both live as long as the run: they stay while no
//! stream plays (the sink is silent, the device does not vanish), are removed when the run ends,
//! and ones left behind by a run that was killed are removed before new ones are made.
//!
//! Windows and macOS offer no such device to a program without a driver: there the known
//! virtual cables ([`super::cable`]) are looked for, and their playback end is used.

/// The sink EchoWarp plays into (its node name).
pub const SINK: &str = "echowarp_microphone_in";
/// The recording device other programs pick (its node name).
pub const SOURCE: &str = "echowarp_microphone";
/// What desktops show for it.
pub const DESCRIPTION: &str = "EchoWarp Microphone";

/// The virtual microphone while it exists; dropping it removes it.
#[derive(Debug)]
pub struct VirtualMic {
    /// Sound-server modules to unload, newest first.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    modules: Vec<u32>,
    /// The device spec (`-d`) to play into.
    pub device: String,
}

#[cfg(target_os = "linux")]
mod imp {
    use std::process::{Command, Stdio};

    use super::{VirtualMic, DESCRIPTION, SINK, SOURCE};

    fn pactl(args: &[&str]) -> Result<String, String> {
        let out = Command::new("pactl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pactl ({e}): install pulseaudio-utils"))?;
        if !out.status.success() {
            return Err(format!(
                "pactl {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The modules of a virtual microphone that a killed run left behind: (id, args) lines of
    /// `pactl list short modules` that name our sink or source.
    pub(super) fn leftovers(listing: &str) -> Vec<u32> {
        listing
            .lines()
            .filter(|l| {
                let (sink, source) = (format!("sink_name={SINK}"), format!("source_name={SOURCE}"));
                l.split_whitespace().any(|arg| arg == sink || arg == source)
            })
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Whether one can be made here: the sound server's PulseAudio interface answers `pactl`.
    ///
    /// # Errors
    /// Why not, in words.
    pub fn can_make() -> Result<(), String> {
        pactl(&["info"]).map(|_| ())
    }

    impl VirtualMic {
        /// Makes the virtual microphone, removing any left behind first.
        ///
        /// # Errors
        /// Why it cannot be made (no sound server, no pactl), in words with the fix.
        pub fn create() -> Result<Self, String> {
            let stale = leftovers(&pactl(&["list", "short", "modules"])?);
            if !stale.is_empty() {
                tracing::info!("removing the virtual microphone a previous run left behind");
            }
            // The remapped source first: it holds the sink's monitor.
            for id in stale.iter().rev() {
                let _ = pactl(&["unload-module", &id.to_string()]);
            }
            let mut mic = VirtualMic {
                modules: Vec::new(),
                device: SINK.to_owned(),
            };
            let sink = pactl(&[
                "load-module",
                "module-null-sink",
                &format!("sink_name={SINK}"),
                // The value quoted for the module's argument parser, and inside it for the property
                // list's (a description has spaces).
                &format!("sink_properties='device.description=\"{DESCRIPTION} (input)\"'"),
            ])?;
            mic.modules.push(parse_id(&sink)?);
            let source = pactl(&[
                "load-module",
                "module-remap-source",
                &format!("master={SINK}.monitor"),
                &format!("source_name={SOURCE}"),
                &format!("source_properties='device.description=\"{DESCRIPTION}\"'"),
            ])?;
            mic.modules.insert(0, parse_id(&source)?);
            tracing::info!(
                "virtual microphone \"{DESCRIPTION}\" ready: other programs record from it"
            );
            Ok(mic)
        }
    }

    fn parse_id(out: &str) -> Result<u32, String> {
        out.trim().parse().map_err(|_| {
            format!(
                "pactl load-module answered {:?}, not a module id",
                out.trim()
            )
        })
    }

    impl Drop for VirtualMic {
        fn drop(&mut self) {
            for id in &self.modules {
                if let Err(e) = pactl(&["unload-module", &id.to_string()]) {
                    tracing::warn!("virtual microphone not removed: {e}");
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
pub use imp::can_make;

#[cfg(not(target_os = "linux"))]
impl VirtualMic {
    /// Finds a virtual cable whose playback end EchoWarp can play into.
    ///
    /// # Errors
    /// No known cable is installed: says which to get.
    pub fn create() -> Result<Self, String> {
        let devices = super::cpal_backend::list_devices(super::AudioHost::Auto)
            .map_err(|e| format!("cannot list the devices: {e}"))?;
        let found = devices
            .iter()
            .find(|d| super::cable::playback_end(&d.name, d.output).is_some())
            .ok_or_else(|| {
                format!(
                    "no virtual cable to play into: install VB-CABLE (vb-audio.com/Cable){}, then run again",
                    if cfg!(target_os = "macos") {
                        " or BlackHole"
                    } else {
                        " or the Steam Streaming Microphone (Steam's Remote Play)"
                    }
                )
            })?;
        tracing::info!("virtual microphone: playing into {}", found.name);
        Ok(Self {
            modules: Vec::new(),
            device: found.id.clone(),
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn only_our_modules_are_left_overs() {
        let listing = "536870913\tmodule-null-sink\tsink_name=sinkA rate=48000\n\
                       536870920\tmodule-null-sink\tsink_name=echowarp_microphone_in sink_properties=x\n\
                       536870921\tmodule-remap-source\tmaster=echowarp_microphone_in.monitor source_name=echowarp_microphone\n\
                       7\tmodule-remap-source\tsource_name=echowarp_microphone_other\n";
        // The last names another source that merely begins like ours.
        let got = super::imp::leftovers(listing);
        assert_eq!(got, [536_870_920, 536_870_921]);
    }
}
