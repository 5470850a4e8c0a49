//! Threads and sockets: the server and the client, driven through an [`EngineHandle`].
//!
//! An engine runs one [`Config`] (see [`config`] for how a profile becomes one). Front ends
//! (the command line, the tray, tests) send [`Command`]s in and read [`Event`]s out; nothing else
//! crosses the boundary. Dropping the handle stops the engine and joins its thread.
//!
//! - `server`: the accept loop, one control thread per connection (`server::control`, a pump
//!   around a `ServerSession`), the media thread that captures, codes, seals and fans out
//!   (`server::media`), and the ban list's writer.
//! - `client`: connects with backoff, pumps a `ClientSession`, and feeds the playout
//!   (`playout`) from its UDP socket.
//! - `conn`, `sock`: the pump between a TCP stream and a session; socket set-up.
//! - `guard`: pre-authentication limits and failure budgets.

mod client;
pub mod config;
mod conn;
pub mod discovery;
mod guard;
mod playout;
mod server;
mod sock;
mod supervise;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::audio::wake::Wake;
use crate::audio::AudioError;
use crate::store::StoreError;

pub use config::{
    CaptureConfig, Claim, Codec, Config, ConfigError, ConnectConfig, Extras, Link, ListenConfig,
    Media, Mute, PlaybackConfig,
};
use config::{Common, Plan};

pub use crate::protocol::session::{
    BACKOFF_MAX, BACKOFF_START, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, PEER_TIMEOUT,
};

/// Binds the TCP listener and the UDP socket a server with this `bind` and `port` would use
/// (dual-stack `[::]` unless bound to one address), for `echowarp doctor` to try.
///
/// # Errors
/// The operating system's, as the server would get it (the port taken, no such address).
pub fn bind_server_sockets(
    bind: Option<IpAddr>,
    port: u16,
) -> std::io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    sock::bind_pair(bind, port, 0)
}

/// Commands into a running engine.
#[derive(Debug)]
pub enum Command {
    /// Stop: a client finalises its recording, a server says goodbye to its clients.
    Stop,
}

/// Live counters for the status line (and, as JSON, for `--stats-json`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// The peer (client: the server; server: clients' addresses).
    pub peer: String,
    /// `48000 Hz 2 ch pcm encrypted`.
    pub format: String,
    /// Audio datagrams sent (server) or accepted (client).
    pub packets: u64,
    /// Datagrams concealed as lost (client).
    pub lost: u64,
    /// Datagrams dropped as forged, replayed or foreign.
    pub dropped: u64,
    /// Packets in the jitter buffer (client).
    pub depth: usize,
    /// Clients connected (server).
    pub clients: usize,
    /// Packets that arrived after their turn (client).
    pub late: u64,
    /// Packets left out to drain depth held beyond the set point for good, after the playback
    /// device stalled or the stream came in earlier than before (client).
    pub trimmed: u64,
    /// Audio buffered between the network and the speaker, smoothed, in ms (client).
    pub depth_ms: f64,
    /// What the latency tuner holds, in ms (client).
    pub target_ms: f64,
    /// Interarrival jitter, in ms (client).
    pub jitter_ms: f64,
    /// The server's clock against the playback device's, in ppm (client).
    pub drift_ppm: f64,
    /// UDP payload received (client) or sent (server) over the last second, in kbit/s.
    pub kbps: f64,
    /// Round-trip time on the control channel, in ms, once measured.
    pub rtt_ms: Option<f64>,
    /// Capture-to-speaker latency, in ms (client), measured: the server's heartbeats say when
    /// the sound at a stream position entered its capture device; the playout knows when each
    /// position leaves the playback device (for a file or `null`, when it is written); the
    /// heartbeats' clock offset puts both on one clock. Absent until the first round trip, and
    /// from servers before protocol 1.1.
    pub latency_ms: Option<f64>,
    /// What the audio device reports holding, in ms, once it has: the time from a sample's
    /// capture to its callback (server), or from the callback to its playing (client).
    pub device_ms: Option<f64>,
    /// The peer's session clock minus ours, in ms, from the heartbeats (client).
    pub clock_offset_ms: Option<f64>,
    /// This side's audio device: working, lost, or being opened again.
    pub device: DeviceState,
    /// What this side sends is muted: silence goes out (server).
    pub muted: bool,
}

/// What a side knows of its audio device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Open and running (or not needed yet).
    #[default]
    Ok,
    /// Its stream failed; it is looked for again shortly.
    Lost,
    /// It could not be opened again yet; looked for again with a growing pause.
    Reopening,
}

impl DeviceState {
    /// A word for the status line and the tooltip.
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Ok => "ok",
            DeviceState::Lost => "lost",
            DeviceState::Reopening => "reopening",
        }
    }
}

/// A [`DeviceState`] shared between threads (one relaxed atomic).
#[derive(Debug, Default)]
pub(crate) struct DeviceCell(std::sync::atomic::AtomicU8);

impl DeviceCell {
    pub(crate) fn set(&self, state: DeviceState) {
        self.0
            .store(state as u8, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> DeviceState {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => DeviceState::Lost,
            2 => DeviceState::Reopening,
            _ => DeviceState::Ok,
        }
    }
}

/// How a run ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request.
    Stopped,
    /// A file source reached its end and was played out.
    StreamEnded,
}

/// Events out of a running engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// The server listens here.
    Listening(SocketAddr),
    /// The server runs without a password: anyone who reaches it can listen. `anyone`: from
    /// any address (`--allow-anonymous`); else from local networks only.
    NoPassword {
        /// Public addresses are served too.
        anyone: bool,
    },
    /// A client authenticated.
    ClientJoined(SocketAddr),
    /// A client left or was dropped.
    ClientLeft {
        /// Who.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A login failed.
    AuthFailed {
        /// From where.
        ip: IpAddr,
        /// Failures so far from this IP.
        count: u32,
        /// Failures that bring a ban (0: never).
        threshold: u32,
    },
    /// An address was banned.
    Banned(IpAddr),
    /// A whole network was banned: failed logins from several of its addresses.
    BannedNetwork(ipnet::IpNet),
    /// A peer speaks another protocol major.
    VersionMismatch {
        /// The other side's address.
        peer: IpAddr,
        /// The words of the 409 line.
        detail: String,
    },
    /// The client is connecting (attempt n of N, N = 0: unlimited).
    Connecting {
        /// This attempt.
        attempt: u32,
        /// Attempts allowed.
        of: u32,
    },
    /// The client's session is up.
    Connected {
        /// The server.
        peer: SocketAddr,
        /// The stream, in words.
        format: String,
    },
    /// The client lost its session and will reconnect.
    ConnectionLost(String),
    /// This side's audio device failed; it is looked for again while the sessions stay.
    DeviceLost {
        /// The playback device (else the capture device).
        playback: bool,
        /// The device, as the status line names it.
        device: String,
    },
    /// The lost device is open again.
    DeviceBack {
        /// The playback device (else the capture device).
        playback: bool,
        /// The device, as the status line names it.
        device: String,
    },
    /// Once a second while streaming.
    Stats(Stats),
    /// The engine thread ended.
    Stopped(Result<Outcome, EngineError>),
}

/// Why the engine stopped with an error. Each maps to an exit code (DESIGN.md §3.1).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The server rejected the password.
    #[error("401 Unauthorized (Invalid password)")]
    Unauthorized,
    /// The client sent its key confirmation and the server did not answer with a verified one:
    /// a wrong password, or a rogue server testing it. Never retried (a retry would give a
    /// rogue server another guess).
    #[error("401 Unauthorized (Invalid password): the server did not confirm the password ({0}); a wrong password, or not the server you meant")]
    NotConfirmed(String),
    /// The server has banned this address.
    #[error("403 Forbidden (Client is banned)")]
    Banned,
    /// The server has no password and serves anonymous clients from local networks only.
    #[error("403 Forbidden (Password required from outside the local network)")]
    PasswordRequired,
    /// The server speaks another protocol major.
    #[error("409 Conflict (Client version mismatch: server {server}, client {client})")]
    VersionMismatch {
        /// The server's version.
        server: String,
        /// Ours.
        client: String,
    },
    /// No session after every attempt.
    #[error("could not connect to {addr}: {last} (after {attempts} attempt{s})", s = if *attempts == 1 { "" } else { "s" })]
    ConnectFailed {
        /// Where.
        addr: String,
        /// How many tries.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The audio device or file failed.
    #[error("audio: {0}")]
    Audio(#[source] Arc<AudioError>),
    /// The audio path failed in the engine's own terms (a format a codec cannot take, a thread
    /// that ended).
    #[error("audio: {0}")]
    Media(String),
    /// A socket or a thread failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The profile's files or the ban list failed.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The configuration cannot run.
    #[error(transparent)]
    Config(Arc<ConfigError>),
    /// The engine stopped without saying why.
    #[error("the engine stopped unexpectedly")]
    Vanished,
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl EngineError {
    /// A failed socket or thread call: `what` was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| EngineError::Io {
            what,
            source: Arc::new(source),
        }
    }
}

// Errors travel in events, which are cloned: sources are shared.
impl From<AudioError> for EngineError {
    fn from(e: AudioError) -> Self {
        EngineError::Audio(Arc::new(e))
    }
}

impl From<ConfigError> for EngineError {
    fn from(e: ConfigError) -> Self {
        EngineError::Config(Arc::new(e))
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(Arc::new(e))
    }
}

/// The engine thread's commands, and the wake-up that makes it look: rung with every command,
/// and by the engine's other threads when one of them ends or has news for it. Between them
/// the engine thread sleeps until its next once-a-second task.
pub(crate) struct Inbox {
    commands: Receiver<Command>,
    pub(crate) bell: Option<Arc<Wake>>,
}

impl Inbox {
    /// The next command, waiting for it at most until `deadline`, or less when the bell rings
    /// (`None`: look around and call again). A handle that is gone reads as [`Command::Stop`].
    pub(crate) fn next(&self, deadline: Instant) -> Option<Command> {
        if let Some(c) = self.try_recv() {
            return Some(c);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        #[cfg(target_os = "linux")]
        if let Some(bell) = &self.bell {
            bell.wait(left);
            return self.try_recv();
        }
        // No bell (not Linux): look again within conn::POLL.
        self.recv_timeout(left.min(conn::POLL))
    }

    /// The next command, waiting at most `timeout` for it.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Option<Command> {
        match self.commands.recv_timeout(timeout) {
            Ok(c) => Some(c),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Some(Command::Stop),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
        }
    }

    /// A command already waiting, if any.
    pub(crate) fn try_recv(&self) -> Option<Command> {
        match self.commands.try_recv() {
            Ok(c) => Some(c),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Command::Stop),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
        }
    }
}

/// Rings `bell`, if there is one.
pub(crate) fn ring(bell: Option<&Wake>) {
    if let Some(b) = bell {
        b.notify();
    }
}

/// Sends commands to a running engine from any thread (a signal handler's, say).
#[derive(Debug, Clone)]
pub struct CommandSender {
    commands: Sender<Command>,
    bell: Option<Arc<Wake>>,
}

impl CommandSender {
    /// Sends a command (ignored once the engine has stopped).
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        ring(self.bell.as_deref());
    }
}

/// A running engine: send commands, read events; dropping it stops the engine.
#[derive(Debug)]
pub struct EngineHandle {
    commands: CommandSender,
    events: Receiver<Event>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine on its own thread.
    ///
    /// # Errors
    /// [`EngineError::Config`] for a pairing of link and media not built yet;
    /// [`EngineError::Io`] if the thread cannot be spawned.
    pub fn start(config: Config) -> Result<Self, EngineError> {
        let (plan, common) = config.plan()?;
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let bell = Wake::new().map(Arc::new);
        let inbox = Inbox {
            commands: cmd_rx,
            bell: bell.clone(),
        };
        let thread = thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let result = match plan {
                    Plan::Serve(listen, capture) => {
                        server::run(listen, capture, common, &inbox, &ev_tx)
                    }
                    Plan::Join(connect, play) => client::run(connect, play, common, &inbox, &ev_tx),
                };
                let _ = ev_tx.send(Event::Stopped(result));
            })
            .map_err(EngineError::io("cannot start the engine thread"))?;
        Ok(Self {
            commands: CommandSender {
                commands: cmd_tx,
                bell,
            },
            events: ev_rx,
            thread: Some(thread),
        })
    }

    /// Sends a command (ignored once the engine has stopped).
    pub fn send(&self, command: Command) {
        self.commands.send(command);
    }

    /// A sender of commands to this engine for another thread.
    pub fn sender(&self) -> CommandSender {
        self.commands.clone()
    }

    /// The event stream.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
