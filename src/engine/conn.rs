//! The pump between a control connection's `TcpStream` and its session state machine
//! ([`crate::protocol::session`]): it writes what the session sends, reads what the peer sends,
//! and sleeps until the peer speaks, the session's next timer, or a bell. It decides nothing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::audio::wake::Wake;
use crate::protocol::session::Session;

/// How long one wait may last, so that loops notice stop requests, where there is no
/// [`Wake`] to tell them (not Linux).
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How long a write may block before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refused connection is read from before it closes ([`Pump::linger`]): enough for
/// a peer on any network to receive the refusal and close first, short enough that refusals
/// hold no thread for long.
const LINGER: Duration = Duration::from_secs(1);
/// How much a refused peer may send before the socket closes regardless.
const LINGER_BYTES: usize = 4096;

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// One control connection's socket.
pub(crate) struct Pump {
    stream: TcpStream,
    /// The connection is gone (closed by the peer or failed); the session was told.
    closed: bool,
}

impl Pump {
    pub(crate) fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            closed: false,
        }
    }

    fn gone(&mut self, s: &mut impl Session, error: Option<String>) {
        if !self.closed {
            self.closed = true;
            s.handle_closed(Instant::now(), error);
        }
    }

    /// Writes what the session has to send; a failed write closes the session's connection.
    pub(crate) fn flush(&mut self, s: &mut impl Session) {
        while let Some(bytes) = s.poll_transmit() {
            if self.closed {
                continue;
            }
            let written = self
                .stream
                .set_write_timeout(Some(WRITE_TIMEOUT))
                .and_then(|()| self.stream.write_all(&bytes));
            if let Err(e) = written {
                self.gone(s, Some(e.to_string()));
            }
        }
    }

    /// One turn: sends what is due, waits for the peer, the session's timer or `bell` (at most
    /// [`POLL`] without a bell), and hands over what happened. Call in a loop with the
    /// driver's own checks between turns.
    pub(crate) fn turn(&mut self, s: &mut impl Session, bell: Option<&Wake>) {
        self.flush(s);
        let now = Instant::now();
        let due = s.poll_timeout().unwrap_or(now + POLL);
        let mut left = due.saturating_duration_since(now);
        if bell.is_none() {
            left = left.min(POLL);
        }
        if !left.is_zero() {
            self.wait(s, bell, left);
        }
        let now = Instant::now();
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        self.flush(s);
    }

    /// Waits up to `left` for the peer's bytes (or only for `bell` once the connection is gone).
    fn wait(&mut self, s: &mut impl Session, bell: Option<&Wake>, left: Duration) {
        if self.closed {
            #[cfg(target_os = "linux")]
            if let Some(b) = bell {
                b.wait(left);
                return;
            }
            let _ = bell;
            std::thread::sleep(left.min(POLL));
            return;
        }
        #[cfg(unix)]
        if bell.is_some() {
            use std::os::fd::AsFd;
            match super::sock::wait_readable(self.stream.as_fd(), bell, left) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.gone(s, Some(e.to_string())),
            }
            // Readable: the read below returns at once, whatever its timeout.
        }
        if bell.is_none() {
            let timeout = left.clamp(Duration::from_millis(1), POLL);
            if let Err(e) = self.stream.set_read_timeout(Some(timeout)) {
                return self.gone(s, Some(e.to_string()));
            }
        }
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => self.gone(s, None),
            Ok(n) => s.handle_input(Instant::now(), &buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => self.gone(s, Some(e.to_string())),
        }
    }

    /// Closes gracefully after a refusal (a status line of DESIGN.md §3.3) the session has
    /// queued: the line is written and the write side shut down, so a FIN follows the line,
    /// then what the peer still sends (its identification line, typically) is read and dropped,
    /// at most [`LINGER_BYTES`] for at most [`LINGER`]. Closing with unread data would send a
    /// reset instead, and a Windows peer then discards the line it had not yet read and reports
    /// "connection reset" (WSAECONNRESET) where it should report the refusal.
    pub(crate) fn linger(&mut self, s: &mut impl Session) {
        self.flush(s);
        if self.closed {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut drained = 0;
        let mut sink = [0u8; 512];
        while drained < LINGER_BYTES {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            if self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return;
            }
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
