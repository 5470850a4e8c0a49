//! The byte stream of one control connection, as both sides see it: first one identification
//! (or status) line each way, then length-prefixed frames, sealed after key confirmation.

use crate::protocol::frame::{encode_frame, FrameDecoder, Message, WireError};
use crate::protocol::keys::{ControlCipher, OpenError};

/// Why a control connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A deadline passed.
    #[error("timed out")]
    TimedOut,
    /// The transport failed (the driver's words).
    #[error("{0}")]
    Io(String),
    /// The peer sent bytes that are no frame or no message.
    #[error("malformed control frame: {0}")]
    Wire(#[from] WireError),
    /// A sealed frame did not open.
    #[error("control frame failed authentication")]
    Forged(#[from] OpenError),
    /// The peer's first line was longer than any identification.
    #[error("line too long")]
    LineTooLong,
}

impl ControlError {
    /// How the driver's report of a closed connection reads.
    pub(super) fn closed(error: Option<String>) -> Self {
        error.map_or(ControlError::Closed, ControlError::Io)
    }
}

/// A line, when one has arrived.
pub(super) enum Line {
    /// Not yet complete.
    Pending,
    /// The line, newline included (or all there was, if the peer closed inside it).
    Done(Vec<u8>),
}

/// Bytes in and out of one control connection.
#[derive(Debug, Default)]
pub(super) struct Wire {
    /// Received bytes not yet taken as the line (until the line is taken).
    head: Vec<u8>,
    line_taken: bool,
    frames: FrameDecoder,
    out: Vec<u8>,
    seal: Option<ControlCipher>,
    open: Option<ControlCipher>,
}

impl Wire {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.line_taken {
            self.frames.push(bytes);
        } else {
            self.head.extend_from_slice(bytes);
        }
    }

    /// Whether anything at all has arrived.
    pub(super) fn heard_anything(&self) -> bool {
        self.line_taken || !self.head.is_empty()
    }

    /// Takes the peer's line of at most `max` bytes once it is complete; what follows it stays
    /// for the frames.
    pub(super) fn take_line(&mut self, max: usize) -> Result<Line, ControlError> {
        let Some(end) = self.head.iter().take(max).position(|&b| b == b'\n') else {
            return if self.head.len() >= max {
                Err(ControlError::LineTooLong)
            } else {
                Ok(Line::Pending)
            };
        };
        let rest = self.head.split_off(end + 1);
        let line = std::mem::take(&mut self.head);
        self.line_taken = true;
        self.frames.push(&rest);
        Ok(Line::Done(line))
    }

    /// What arrived of a line the peer never finished (it closed inside it).
    pub(super) fn take_partial_line(&mut self) -> Vec<u8> {
        self.line_taken = true;
        std::mem::take(&mut self.head)
    }

    /// The next complete message.
    pub(super) fn next_message(&mut self) -> Result<Option<Message>, ControlError> {
        if !self.line_taken {
            return Ok(None);
        }
        let Some(mut body) = self.frames.next_frame()? else {
            return Ok(None);
        };
        if let Some(c) = self.open.as_mut() {
            c.open(&mut body)?;
        }
        Ok(Some(Message::decode(&body)?))
    }

    pub(super) fn send_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
    }

    pub(super) fn send(&mut self, msg: &Message) {
        let mut body = Vec::with_capacity(64);
        msg.encode(&mut body);
        if let Some(c) = self.seal.as_mut() {
            c.seal(&mut body);
        }
        // Every message this program sends is far below the frame limit.
        if encode_frame(&body, &mut self.out).is_err() {
            debug_assert!(false, "a control message outgrew a frame");
        }
    }

    /// From now on, frames are sealed with `seal` and opened with `open`.
    pub(super) fn secure(&mut self, seal: ControlCipher, open: ControlCipher) {
        self.seal = Some(seal);
        self.open = Some(open);
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }
}
