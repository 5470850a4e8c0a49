//! The choice of sound API (`--audio-host`, profile key `audio_host`).

/// Which of the system's sound APIs devices are reached through: on Linux PipeWire, PulseAudio
/// (or PipeWire's PulseAudio server), ALSA or JACK; elsewhere the platform's own (WASAPI,
/// CoreAudio), which is what `auto` means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioHost {
    /// Linux: PipeWire where it runs, else ALSA. Elsewhere: the platform's.
    #[default]
    Auto,
    /// PipeWire's own API.
    #[serde(rename = "pipewire")]
    PipeWire,
    /// The PulseAudio protocol (PulseAudio, or PipeWire's pipewire-pulse).
    Pulse,
    /// ALSA PCMs, including its `pulse` and `pipewire` plug-ins.
    Alsa,
    /// A JACK server.
    Jack,
}

impl AudioHost {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [AudioHost; 5] = [
        AudioHost::Auto,
        AudioHost::PipeWire,
        AudioHost::Pulse,
        AudioHost::Alsa,
        AudioHost::Jack,
    ];

    /// The name the profile and `--audio-host` use.
    pub fn name(self) -> &'static str {
        match self {
            AudioHost::Auto => "auto",
            AudioHost::PipeWire => "pipewire",
            AudioHost::Pulse => "pulse",
            AudioHost::Alsa => "alsa",
            AudioHost::Jack => "jack",
        }
    }

    /// Parses a name as [`AudioHost::name`] gives it (any case).
    ///
    /// # Errors
    /// A message listing the names, for anything else.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!(
                    "`{text}`: the audio hosts are {}",
                    Self::ALL.map(AudioHost::name).join(", ")
                )
            })
    }
}

impl std::fmt::Display for AudioHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_anything_else_lists_them() {
        for h in AudioHost::ALL {
            assert_eq!(AudioHost::parse(h.name()), Ok(h));
            assert_eq!(h.to_string(), h.name());
        }
        assert_eq!(AudioHost::parse(" PipeWire "), Ok(AudioHost::PipeWire));
        let err = AudioHost::parse("oss").expect_err("no OSS host");
        assert!(err.contains("auto, pipewire, pulse, alsa, jack"), "{err}");
    }
}
