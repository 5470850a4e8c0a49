//! What the engine runs: one [`Config`], made from a profile in one place
//! ([`Config::from_profile`]) and checked there, before any device or socket opens.
//!
//! A configuration keeps two questions apart: *who listens for connections* ([`Link`]: the
//! server listens, the client connects) and *what this side does with audio* ([`Media`]:
//! capture and send, or receive and play). The session's [`Direction`], announced to the client
//! in the session parameters, follows from the pair. Today the side that listens captures and
//! the side that connects plays; reverse and duplex will be other pairs, refused by
//! [`Config::direction`] until they are built.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::audio::{AudioHost, DeviceKind, DeviceSpec};
use crate::protocol::frame::{self, Direction, SecurityMode};
use crate::protocol::Password;
use crate::store::profile::{CodecName, Profile, Role};
use crate::store::{paths, StoreError};

const LISTENER_PLAYS: &str = "a server that plays what its clients send";
const CONNECTOR_CAPTURES: &str = "a client that captures and sends";

/// What the engine thread runs.
pub(crate) enum Plan {
    /// Listen, capture, and send to every client.
    Serve(ListenConfig, CaptureConfig),
    /// Connect, receive and play.
    Join(ConnectConfig, PlaybackConfig),
}

/// What both sides take from a [`Config`] besides their link and media.
pub(crate) struct Common {
    /// Shared password (empty for none).
    pub(crate) password: Password,
    /// UDP socket buffer in bytes (0: the OS default).
    pub(crate) socket_buffer_size: usize,
    /// Another protocol version to claim.
    pub(crate) claim: Claim,
}

/// Everything the engine needs to run one side.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen for clients, or connect to a server.
    pub link: Link,
    /// Capture and send, or receive and play.
    pub media: Media,
    /// Shared password (empty for none).
    pub password: Password,
    /// SO_SNDBUF/SO_RCVBUF of the UDP socket, in bytes (0: the OS default).
    pub socket_buffer_size: usize,
    /// Another protocol version to claim (tests of 409 and of older peers).
    pub claim: Claim,
}

/// Who listens for connections.
#[derive(Debug, Clone)]
pub enum Link {
    /// Listen on a port and serve clients (the server).
    Listen(ListenConfig),
    /// Connect to a server, and again after losing it (the client).
    Connect(ConnectConfig),
}

/// How a server listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Listen only here; `None`: every interface, IPv4 and IPv6.
    pub bind: Option<IpAddr>,
    /// TCP and UDP port (0: any free port, reported in [`super::Event::Listening`]).
    pub port: u16,
    /// Datagram protection, chosen by the server for every session.
    pub mode: SecurityMode,
    /// Clients served at once.
    pub max_clients: usize,
    /// Failed logins from one IP before a ban (0: never ban).
    pub ban_threshold: u32,
    /// Without a password, serve clients from public addresses too (else only loopback,
    /// private, link-local, CGNAT and unique-local ones).
    pub allow_anonymous: bool,
    /// Announce the server on the local network (mDNS).
    pub discovery: bool,
    /// The ban list file.
    pub ban_list: PathBuf,
}

/// Where a client connects.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Server host name or IP (an IPv6 address without brackets).
    pub server: String,
    /// Server port.
    pub port: u16,
    /// Connection attempts before giving up (0: forever).
    pub reconnect_attempts: u32,
}

/// What this side does with audio.
#[derive(Debug, Clone)]
pub enum Media {
    /// Capture a device or file, code it and send it.
    Capture(CaptureConfig),
    /// Receive, buffer and play (or record) what the peer sends.
    Play(PlaybackConfig),
}

/// The capturing side: the device and the stream it makes.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// What to capture.
    pub device: DeviceSpec,
    /// The sound API a device is reached through.
    pub host: AudioHost,
    /// Capture an input, or what an output plays.
    pub device_kind: DeviceKind,
    /// Audio per datagram.
    pub frame_ms: u32,
    /// How the audio is coded on the wire.
    pub codec: Codec,
    /// Capture at this rate if the device allows (`None`: its own).
    pub sample_rate: Option<u32>,
    /// Capture this many channels if the device allows (`None`: stereo if possible).
    pub channels: Option<u16>,
    /// Send silence in place of what is captured; switched while running.
    pub mute: Mute,
}

/// Whether the sending side sends silence: one switch that the engine reads for every packet
/// and its owner (the tray) flips while the stream runs, with no restart.
#[derive(Debug, Clone, Default)]
pub struct Mute(Arc<AtomicBool>);

impl Mute {
    /// A switch, on or off.
    pub fn new(on: bool) -> Self {
        Self(Arc::new(AtomicBool::new(on)))
    }

    /// Turns it on or off; the next packet hears it.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The playing side: the device and its buffering.
#[derive(Debug, Clone)]
pub struct PlaybackConfig {
    /// Where to play.
    pub device: DeviceSpec,
    /// The sound API a device is reached through.
    pub host: AudioHost,
    /// Jitter buffer depth.
    pub target_latency: Duration,
    /// Open the playback device at this rate (`None`: the stream's rate if the device allows).
    pub device_rate: Option<u32>,
}

/// How audio is coded in datagrams: the one model of the codec, from which the wire's tag
/// ([`Codec::wire`]) and the encoder's settings come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// 16-bit PCM.
    Pcm,
    /// 16-bit PCM, each datagram also carrying the previous frame (halves the frame size
    /// limit).
    PcmRedundant,
    /// Opus.
    Opus {
        /// Bitrate in kbit/s.
        kbps: u32,
        /// In-band forward error correction.
        fec: bool,
    },
}

impl Codec {
    /// The codec's tag in the session parameters.
    pub fn wire(self) -> frame::Codec {
        match self {
            Codec::Pcm => frame::Codec::PcmS16,
            Codec::PcmRedundant => frame::Codec::PcmS16Redundant,
            Codec::Opus { .. } => frame::Codec::Opus,
        }
    }
}

/// A protocol version to claim instead of ours (tests only; `None`: ours).
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim {
    /// The major version.
    pub major: Option<u16>,
    /// The minor version.
    pub minor: Option<u16>,
}

/// Settings that come from the command line only: no profile key holds them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// Server: listen on this address only (`-b`).
    pub bind: Option<IpAddr>,
    /// Claim another protocol version.
    pub claim: Claim,
}

/// Why a profile cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key's value is out of range or contradicts another.
    #[error("{key}: {message}")]
    Invalid {
        /// The profile key at fault.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A client with nowhere to connect.
    #[error("a client needs the server's address: -a HOST (or server_address in the profile)")]
    NoServerAddress,
    /// A pairing of link and media this build does not stream.
    #[error("{0}: this build streams from the server to its clients only")]
    Unsupported(&'static str),
    /// A path the configuration needs could not be found.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Config {
    /// The configuration a profile asks for, with the command line's extras.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key at fault, a client's missing address, or a ban list
    /// that has no place.
    pub fn from_profile(p: &Profile, extras: Extras) -> Result<Config, ConfigError> {
        p.validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let device = DeviceSpec::parse(&p.device).map_err(|e| ConfigError::Invalid {
            key: "device",
            message: e.to_string(),
        })?;
        let (link, media) = match p.role {
            Role::Server => {
                let codec = match (p.audio.codec, p.audio.redundancy) {
                    (CodecName::Opus, _) => Codec::Opus {
                        kbps: p.audio.bitrate_kbps,
                        fec: p.audio.fec,
                    },
                    (CodecName::Pcm, true) => Codec::PcmRedundant,
                    (CodecName::Pcm, false) => Codec::Pcm,
                };
                let listen = ListenConfig {
                    bind: extras.bind,
                    port: p.port,
                    mode: if p.encryption {
                        SecurityMode::Encrypted
                    } else if p.integrity {
                        SecurityMode::Integrity
                    } else {
                        SecurityMode::Plain
                    },
                    max_clients: p.max_clients as usize,
                    ban_threshold: p.reconnect_attempts,
                    allow_anonymous: p.allow_anonymous,
                    discovery: p.discovery,
                    ban_list: paths::ban_list_path()?,
                };
                let capture = CaptureConfig {
                    device,
                    host: p.audio_host,
                    device_kind: p.device_kind,
                    frame_ms: p.audio.frame_ms,
                    codec,
                    // Opus codes 48 kHz unless told otherwise, whatever the device's own rate.
                    sample_rate: match (p.audio.sample_rate, codec) {
                        (0, Codec::Opus { .. }) => Some(48_000),
                        (0, _) => None,
                        (rate, _) => Some(rate),
                    },
                    channels: (p.audio.channels != 0).then_some(p.audio.channels),
                    mute: Mute::new(p.mute),
                };
                (Link::Listen(listen), Media::Capture(capture))
            }
            Role::Client => {
                let server = p
                    .server_address
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                if server.is_empty() {
                    return Err(ConfigError::NoServerAddress);
                }
                let connect = ConnectConfig {
                    server: server.to_owned(),
                    port: p.port,
                    reconnect_attempts: p.reconnect_attempts,
                };
                let play = PlaybackConfig {
                    device,
                    host: p.audio_host,
                    target_latency: Duration::from_millis(u64::from(p.audio.target_latency_ms)),
                    device_rate: (p.audio.sample_rate != 0).then_some(p.audio.sample_rate),
                };
                (Link::Connect(connect), Media::Play(play))
            }
        };
        let config = Config {
            link,
            media,
            password: p.password.clone(),
            socket_buffer_size: p.socket_buffer_size as usize,
            claim: extras.claim,
        };
        config.direction()?;
        Ok(config)
    }

    /// The switch that mutes what this side sends (`None`: this side does not send).
    pub fn mute(&self) -> Option<Mute> {
        match &self.media {
            Media::Capture(c) => Some(c.mute.clone()),
            Media::Play(_) => None,
        }
    }

    /// Which way the audio flows, from who listens and who captures.
    ///
    /// # Errors
    /// [`ConfigError::Unsupported`] for the pairs not built yet (a listener that plays, a
    /// client that captures).
    pub fn direction(&self) -> Result<Direction, ConfigError> {
        match (&self.link, &self.media) {
            (Link::Listen(_), Media::Capture(_)) | (Link::Connect(_), Media::Play(_)) => {
                Ok(Direction::ServerToClient)
            }
            (Link::Listen(_), Media::Play(_)) => Err(ConfigError::Unsupported(LISTENER_PLAYS)),
            (Link::Connect(_), Media::Capture(_)) => {
                Err(ConfigError::Unsupported(CONNECTOR_CAPTURES))
            }
        }
    }

    /// What the engine thread runs, and what both sides share.
    pub(crate) fn plan(self) -> Result<(Plan, Common), ConfigError> {
        let common = Common {
            password: self.password,
            socket_buffer_size: self.socket_buffer_size,
            claim: self.claim,
        };
        let plan = match (self.link, self.media) {
            (Link::Listen(listen), Media::Capture(capture)) => Plan::Serve(listen, capture),
            (Link::Connect(connect), Media::Play(play)) => Plan::Join(connect, play),
            (Link::Listen(_), Media::Play(_)) => {
                return Err(ConfigError::Unsupported(LISTENER_PLAYS))
            }
            (Link::Connect(_), Media::Capture(_)) => {
                return Err(ConfigError::Unsupported(CONNECTOR_CAPTURES))
            }
        };
        Ok((plan, common))
    }

    /// Whether this side is the server (it listens).
    pub fn listens(&self) -> bool {
        matches!(self.link, Link::Listen(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(p: &Profile) -> Result<Config, ConfigError> {
        Config::from_profile(p, Extras::default())
    }

    #[test]
    fn a_server_listens_and_captures_a_client_connects_and_plays() {
        let server = config(&Profile::default()).expect("default profile runs");
        assert!(matches!(
            (&server.link, &server.media),
            (Link::Listen(_), Media::Capture(_))
        ));
        let client = config(&Profile {
            role: Role::Client,
            server_address: " [fe80::1] ".into(),
            ..Profile::default()
        })
        .expect("client runs");
        match (&client.link, &client.media) {
            (Link::Connect(c), Media::Play(_)) => assert_eq!(c.server, "fe80::1"),
            other => panic!("unexpected {other:?}"),
        }
        for c in [&server, &client] {
            assert_eq!(c.direction().expect("built"), Direction::ServerToClient);
        }
    }

    #[test]
    fn pairs_not_built_yet_are_refused_by_name() {
        let mut c = config(&Profile::default()).expect("server");
        c.media = Media::Play(PlaybackConfig {
            device: DeviceSpec::Null,
            host: AudioHost::Auto,
            target_latency: Duration::from_millis(10),
            device_rate: None,
        });
        let e = c.direction().expect_err("reverse is not built");
        assert!(e.to_string().contains("a server that plays"), "{e}");
    }

    #[test]
    fn the_codec_is_one_choice_with_its_settings() {
        let mut p = Profile::default();
        let codec = |p: &Profile| match config(p).expect("valid").media {
            Media::Capture(c) => (c.codec, c.sample_rate),
            Media::Play(_) => panic!("a server captures"),
        };
        assert_eq!(codec(&p), (Codec::Pcm, None));
        p.audio.redundancy = true;
        assert_eq!(codec(&p), (Codec::PcmRedundant, None));
        p.audio.redundancy = false;
        p.audio.codec = CodecName::Opus;
        p.audio.bitrate_kbps = 64;
        p.audio.frame_ms = 10;
        assert_eq!(
            codec(&p),
            (
                Codec::Opus {
                    kbps: 64,
                    fec: true
                },
                Some(48_000)
            )
        );
        assert_eq!(Codec::PcmRedundant.wire(), frame::Codec::PcmS16Redundant);
    }

    #[test]
    fn a_bad_profile_names_its_key_before_anything_opens() {
        let client = Profile {
            role: Role::Client,
            ..Profile::default()
        };
        assert!(matches!(config(&client), Err(ConfigError::NoServerAddress)));
        let bad = Profile {
            port: 0,
            ..Profile::default()
        };
        match config(&bad) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "port"),
            other => panic!("unexpected {other:?}"),
        }
        let device = Profile {
            device: "wav:".into(),
            ..Profile::default()
        };
        assert!(
            matches!(
                config(&device),
                Err(ConfigError::Invalid { key: "device", .. })
            ),
            "an empty wav path is refused"
        );
    }
}
