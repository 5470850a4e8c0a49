//! Virtual audio cables: playback devices whose sound other programs record, as a game on a
//! streaming host records the player's microphone (issue 16, README "Game hosts"). EchoWarp's
//! client plays into the cable's input; the game records from its other end. `--list-devices`
//! marks the ones it knows by name.

/// A known virtual cable, recognised by a device's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cable {
    /// The product.
    pub product: &'static str,
    /// Where other programs record what is played into this end.
    pub records_from: &'static str,
}

/// Name patterns (lower case, matched as parts of the device's name) of the playback ends of
/// the cables in common use, and what each is.
const PLAYBACK_ENDS: &[(&str, Cable)] = &[
    (
        "cable input",
        Cable {
            product: "VB-Audio Virtual Cable",
            records_from: "CABLE Output",
        },
    ),
    (
        "steam streaming microphone",
        Cable {
            product: "Steam Streaming Microphone",
            records_from: "the Steam Streaming Microphone recording device",
        },
    ),
    (
        "voicemeeter input",
        Cable {
            product: "VoiceMeeter",
            records_from: "VoiceMeeter Output",
        },
    ),
    (
        "voicemeeter aux input",
        Cable {
            product: "VoiceMeeter",
            records_from: "VoiceMeeter Aux Output",
        },
    ),
    (
        "virtual audio cable",
        Cable {
            product: "Virtual Audio Cable",
            records_from: "the recording device of the same line",
        },
    ),
    (
        "blackhole",
        Cable {
            product: "BlackHole",
            records_from: "BlackHole (the input of the same name)",
        },
    ),
];

/// The cable whose playback end `name` is, if it is one EchoWarp knows. Only output devices
/// are playback ends: the recording end of a cable is what the game picks, not EchoWarp.
pub fn playback_end(name: &str, output: bool) -> Option<Cable> {
    if !output {
        return None;
    }
    let name = name.to_lowercase();
    // The longest pattern that matches: "voicemeeter aux input" before "voicemeeter input".
    PLAYBACK_ENDS
        .iter()
        .filter(|(pattern, _)| name.contains(pattern))
        .max_by_key(|(pattern, _)| pattern.len())
        .map(|(_, cable)| *cable)
}

/// The note `--list-devices` prints for a cable.
pub fn note(cable: &Cable) -> String {
    format!(
        "virtual cable ({}): games record from {}",
        cable.product, cable.records_from
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_cables_game_hosts_use_by_their_windows_names() {
        let vb = playback_end("CABLE Input (VB-Audio Virtual Cable)", true).expect("VB-CABLE");
        assert_eq!(vb.records_from, "CABLE Output");
        let steam = playback_end("Speakers (Steam Streaming Microphone)", true).expect("Steam");
        assert_eq!(steam.product, "Steam Streaming Microphone");
        let aux = playback_end(
            "VoiceMeeter Aux Input (VB-Audio VoiceMeeter AUX VAIO)",
            true,
        );
        assert_eq!(aux.map(|c| c.records_from), Some("VoiceMeeter Aux Output"));
        assert!(playback_end("BlackHole 2ch", true).is_some());
        assert!(playback_end("Line 1 (Virtual Audio Cable)", true).is_some());
    }

    #[test]
    fn ordinary_devices_and_recording_ends_are_not_marked() {
        for name in [
            "Speakers (Realtek(R) Audio)",
            "Headset Earphone (Jabra)",
            "sinkB",
        ] {
            assert_eq!(playback_end(name, true), None, "{name}");
        }
        // The recording end is what the game picks, not a device to play into.
        assert_eq!(
            playback_end("CABLE Output (VB-Audio Virtual Cable)", false),
            None
        );
        assert_eq!(
            playback_end("CABLE Input (VB-Audio Virtual Cable)", false),
            None
        );
        let vb = playback_end("CABLE Input (VB-Audio Virtual Cable)", true).expect("VB-CABLE");
        assert_eq!(
            note(&vb),
            "virtual cable (VB-Audio Virtual Cable): games record from CABLE Output"
        );
    }
}
