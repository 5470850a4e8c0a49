//! The text preamble of the control channel (DESIGN.md §3.3): identification lines and status lines.
//!
//! These lines stay the same in every protocol version, so that any two EchoWarp builds can tell
//! each other apart and say so in words a person understands.

use super::{PROTOCOL_MAJOR, PROTOCOL_MINOR};

/// Longest identification line accepted, newline included.
pub const MAX_IDENT_LEN: usize = 64;
/// Longest status line a client reads before giving up on the server's answer.
pub const MAX_STATUS_LEN: usize = 128;
const PREFIX: &str = "ECHOWARP/";

/// A peer's identification: protocol version and application version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// Protocol major version: must match.
    pub major: u16,
    /// Protocol minor version: informative.
    pub minor: u16,
    /// Application version, e.g. `0.1.0`: informative.
    pub app_version: String,
}

impl Ident {
    /// This build's identification, optionally claiming another protocol major (for tests of 409).
    pub fn ours(major_override: Option<u16>) -> Self {
        Self {
            major: major_override.unwrap_or(PROTOCOL_MAJOR),
            minor: PROTOCOL_MINOR,
            app_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The same, claiming protocol minor `minor` if given (for tests of what older peers get).
    #[must_use]
    pub fn claiming_minor(self, minor: Option<u16>) -> Self {
        Self {
            minor: minor.unwrap_or(self.minor),
            ..self
        }
    }

    /// The line as sent, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX}{}.{} {}\n",
            self.major, self.minor, self.app_version
        )
    }

    /// `major.minor`, as shown in a 409 line.
    pub fn version(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Parses one line (with or without its trailing `\n`).
    ///
    /// # Errors
    /// `None` when the line is not an EchoWarp identification: too long, not ASCII, wrong prefix,
    /// a version that is not `<u16>.<u16>`, or an empty or spaced application version.
    pub fn parse(line: &[u8]) -> Option<Self> {
        if line.len() > MAX_IDENT_LEN {
            return None;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // The limit counts the newline the line is sent with.
        if line.len() >= MAX_IDENT_LEN {
            return None;
        }
        if !line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let rest = text.strip_prefix(PREFIX)?;
        let (version, app) = rest.split_once(' ')?;
        if app.is_empty() || app.contains(' ') {
            return None;
        }
        let (major, minor) = version.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            app_version: app.to_owned(),
        })
    }
}

/// A status line that ends a connection, with the code and words of DESIGN.md §3.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `400 Bad Request`: the first line was not an identification.
    BadRequest,
    /// `401 Unauthorized (Invalid password)`.
    Unauthorized,
    /// `403 Forbidden (Client is banned)`.
    Forbidden,
    /// `403 Forbidden (Password required from outside the local network)`: the server has no
    /// password and serves anonymous clients from local networks only (a client that knows
    /// only "403" reads it as a ban).
    PasswordRequired,
    /// `409 Conflict (Client version mismatch: server <M.m>, client <M.m>)`.
    Conflict {
        /// The server's `major.minor`.
        server: String,
        /// The client's `major.minor`.
        client: String,
    },
    /// `503 Service Unavailable (Server is full)`.
    ServiceUnavailable,
}

impl Status {
    /// The numeric code.
    pub fn code(&self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden | Status::PasswordRequired => 403,
            Status::Conflict { .. } => 409,
            Status::ServiceUnavailable => 503,
        }
    }

    /// The line as sent, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Status::BadRequest => "400 Bad Request\n".to_owned(),
            Status::Unauthorized => "401 Unauthorized (Invalid password)\n".to_owned(),
            Status::Forbidden => "403 Forbidden (Client is banned)\n".to_owned(),
            Status::PasswordRequired => {
                "403 Forbidden (Password required from outside the local network)\n".to_owned()
            }
            Status::Conflict { server, client } => {
                format!(
                    "409 Conflict (Client version mismatch: server {server}, client {client})\n"
                )
            }
            Status::ServiceUnavailable => "503 Service Unavailable (Server is full)\n".to_owned(),
        }
    }

    /// Recognises a status line by its code; the words after the code matter only for 409
    /// (whose versions are kept if they are versions: `<digits>.<digits>`, else `?`, so that
    /// nothing a server sends reaches the terminal but those) and for 403 (a ban, or a
    /// password required).
    pub fn parse(line: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(line).ok()?.trim_end();
        let (code, words) = text.split_once(' ').unwrap_or((text, ""));
        match code {
            "400" => Some(Status::BadRequest),
            "401" => Some(Status::Unauthorized),
            "403" if words.contains("Password required") => Some(Status::PasswordRequired),
            "403" => Some(Status::Forbidden),
            "409" => {
                let version = |v: &str| {
                    let ok = v.len() <= 11
                        && v.split_once('.').is_some_and(|(a, b)| {
                            [a, b]
                                .iter()
                                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
                        });
                    if ok {
                        v.to_owned()
                    } else {
                        "?".to_owned()
                    }
                };
                let inner = words
                    .split_once("server ")
                    .and_then(|(_, r)| r.split_once(", client "))
                    .map(|(s, c)| (version(s), version(c.trim_end_matches(')'))));
                let (server, client) = inner.unwrap_or_else(|| ("?".into(), "?".into()));
                Some(Status::Conflict { server, client })
            }
            "503" => Some(Status::ServiceUnavailable),
            _ => None,
        }
    }
}

/// The server's decision on a client's first line.
///
/// # Errors
/// The status line to send before closing: 400 for anything that is not an identification,
/// 409 for another protocol major, 503 when `full`.
pub fn check_client_line(line: &[u8], ours: &Ident, full: bool) -> Result<Ident, Status> {
    let theirs = Ident::parse(line).ok_or(Status::BadRequest)?;
    if theirs.major != ours.major {
        return Err(Status::Conflict {
            server: ours.version(),
            client: theirs.version(),
        });
    }
    if full {
        return Err(Status::ServiceUnavailable);
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identification_round_trips() {
        let ours = Ident::ours(None);
        let line = ours.to_line();
        assert!(line.starts_with("ECHOWARP/1.1 "));
        assert!(line.len() <= MAX_IDENT_LEN);
        assert_eq!(Ident::parse(line.as_bytes()), Some(ours));
    }

    #[test]
    fn rejects_what_is_not_an_identification() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"ECHOWARP/1 x\n",
            b"ECHOWARP/1.0\n",
            b"ECHOWARP/1.0 \n",
            b"ECHOWARP/1.0 a b\n",
            b"ECHOWARP/99999999.0 x\n",
            b"ECHOWARP/1.0 \xff\n",
            &[b'E'; 65][..],
            // 64 bytes without the newline: 65 with it, one over the limit (found by fuzzing).
            b"ECHOWARP/1.0 EwwdwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwH",
        ] {
            assert_eq!(Ident::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn server_answers_400_409_503() {
        let ours = Ident::ours(None);
        assert_eq!(
            check_client_line(b"hello\n", &ours, false),
            Err(Status::BadRequest)
        );
        let err =
            check_client_line(b"ECHOWARP/99.0 x\n", &ours, false).expect_err("major 99 is refused");
        assert_eq!(
            err.to_line(),
            "409 Conflict (Client version mismatch: server 1.1, client 99.0)\n"
        );
        assert_eq!(
            check_client_line(ours.to_line().as_bytes(), &ours, true),
            Err(Status::ServiceUnavailable)
        );
        assert!(check_client_line(b"ECHOWARP/1.7 future\n", &ours, false).is_ok());
    }

    #[test]
    fn status_lines_parse_back() {
        for s in [
            Status::BadRequest,
            Status::Unauthorized,
            Status::Forbidden,
            Status::PasswordRequired,
            Status::Conflict {
                server: "1.0".into(),
                client: "2.3".into(),
            },
            Status::ServiceUnavailable,
        ] {
            assert_eq!(Status::parse(s.to_line().as_bytes()), Some(s));
        }
        assert_eq!(Status::parse(b"ECHOWARP/1.0 x\n"), None);
        // A hostile server's words never reach the terminal: only versions pass.
        assert_eq!(
            Status::parse(b"409 Conflict (server \x1b]0;pwned\x07, client 1.1)\n"),
            Some(Status::Conflict {
                server: "?".into(),
                client: "1.1".into()
            })
        );
        assert_eq!(
            Status::parse(b"409 whatever\n"),
            Some(Status::Conflict {
                server: "?".into(),
                client: "?".into()
            })
        );
    }
}
