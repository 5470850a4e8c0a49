//! The latency presets the tray offers: named settings of the profile's `[audio]` table (the
//! trade-offs README's "Latency and CPU" table measures), so that nobody has to know what
//! `frame_ms` is to pick one.

use crate::store::profile::{AudioSettings, CodecName};

/// One named trade between delay, robustness and CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// PCM, 5 ms packets, 10 ms buffer: the defaults.
    Everyday,
    /// PCM, 2 ms packets, 3 ms buffer: playing along live on a quiet wired LAN.
    Live,
    /// Opus at 128 kb/s in 5 ms packets: Wi-Fi, VPNs, the internet.
    ThinLink,
    /// Opus in 20 ms packets without FEC: the least CPU, the most delay.
    LeastCpu,
}

impl Preset {
    /// Every preset, in the menu's order.
    pub const ALL: [Preset; 4] = [
        Preset::Everyday,
        Preset::Live,
        Preset::ThinLink,
        Preset::LeastCpu,
    ];

    /// What the menu calls it.
    pub fn label(self) -> &'static str {
        match self {
            Preset::Everyday => "Everyday (PCM, 5 ms packets)",
            Preset::Live => "Live playing (PCM, 2 ms packets, wired LAN)",
            Preset::ThinLink => "Thin link (Opus, Wi-Fi or VPN)",
            Preset::LeastCpu => "Least CPU (Opus, 20 ms packets)",
        }
    }

    /// Sets the keys the preset decides; the rest (rate, channels) stay as they are.
    pub fn apply(self, a: &mut AudioSettings) {
        let d = AudioSettings::default();
        let (codec, frame_ms, target_latency_ms, fec) = match self {
            Preset::Everyday => (CodecName::Pcm, d.frame_ms, d.target_latency_ms, d.fec),
            Preset::Live => (CodecName::Pcm, 2, 3, d.fec),
            Preset::ThinLink => (CodecName::Opus, 5, d.target_latency_ms, true),
            Preset::LeastCpu => (CodecName::Opus, 20, 20, false),
        };
        a.codec = codec;
        a.frame_ms = frame_ms;
        a.target_latency_ms = target_latency_ms;
        a.fec = fec;
        a.redundancy = false;
        a.bitrate_kbps = d.bitrate_kbps;
    }

    /// The preset these settings are, if any (a hand-tuned profile is none of them).
    pub fn of(a: &AudioSettings) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| {
            let mut mine = a.clone();
            p.apply(&mut mine);
            mine == *a
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_preset_is_recognised_after_it_is_applied_and_keeps_the_format() {
        for p in Preset::ALL {
            let mut a = AudioSettings {
                sample_rate: 44_100,
                channels: 1,
                ..AudioSettings::default()
            };
            p.apply(&mut a);
            assert_eq!(Preset::of(&a), Some(p), "{p:?}");
            assert_eq!((a.sample_rate, a.channels), (44_100, 1));
        }
        assert_eq!(
            Preset::of(&AudioSettings::default()),
            Some(Preset::Everyday)
        );
        let tuned = AudioSettings {
            target_latency_ms: 40,
            ..AudioSettings::default()
        };
        assert_eq!(Preset::of(&tuned), None);
    }

    #[test]
    fn every_preset_passes_the_profiles_own_checks() {
        for p in Preset::ALL {
            let mut profile = crate::store::profile::Profile::default();
            p.apply(&mut profile.audio);
            assert_eq!(profile.validate(), Ok(()), "{p:?}");
        }
    }
}
