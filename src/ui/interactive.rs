//! Interactive setup (`-I`): asks for each setting, Enter keeps the value shown, end of input
//! cancels cleanly. Reads from any `BufRead`, so tests drive it with plain bytes; the password
//! goes through a separate reader, which on a terminal turns echo off.

use std::io::{self, BufRead, Write};

use zeroize::Zeroizing;

use crate::audio::{DeviceKind, DeviceSpec};
use crate::protocol::Password;
use crate::store::profile::{Profile, Role};

/// What the user chose.
#[derive(Debug)]
pub struct Choice {
    /// The settings to run with.
    pub profile: Profile,
    /// Whether to save them as the profile.
    pub save: bool,
}

/// Reads one secret answer without showing it (`Ok(None)` at end of input).
pub type SecretReader<'a> = &'a mut dyn FnMut() -> io::Result<Option<String>>;

struct Prompter<'a> {
    input: &'a mut dyn BufRead,
    out: &'a mut dyn Write,
    secret: Option<SecretReader<'a>>,
}

/// End of input: the user closed the terminal or pressed Ctrl-D.
struct Eof;

impl Prompter<'_> {
    fn ask(&mut self, question: &str, default: &str) -> Result<Result<String, Eof>, io::Error> {
        write!(self.out, "{question} [{default}]: ")?;
        self.out.flush()?;
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            writeln!(self.out)?;
            return Ok(Err(Eof));
        }
        let answer = line.trim();
        Ok(Ok(if answer.is_empty() {
            default.to_owned()
        } else {
            answer.to_owned()
        }))
    }

    /// Asks for a password: through the secret reader when there is one (nothing is echoed),
    /// else as any other answer.
    fn ask_secret(
        &mut self,
        question: &str,
        default: &str,
    ) -> Result<Result<Zeroizing<String>, Eof>, io::Error> {
        let Some(read) = self.secret.as_mut() else {
            return Ok(self.ask(question, default)?.map(Zeroizing::new));
        };
        write!(self.out, "{question} [{default}] (not shown): ")?;
        self.out.flush()?;
        let Some(line) = read()? else {
            writeln!(self.out)?;
            return Ok(Err(Eof));
        };
        let line = Zeroizing::new(line);
        let answer = line.trim();
        Ok(Ok(Zeroizing::new(if answer.is_empty() {
            default.to_owned()
        } else {
            answer.to_owned()
        })))
    }

    /// Asks until `parse` accepts the answer.
    fn ask_parsed<T>(
        &mut self,
        question: &str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Result<T, Eof>, io::Error> {
        loop {
            let answer = match self.ask(question, default)? {
                Ok(a) => a,
                Err(Eof) => return Ok(Err(Eof)),
            };
            match parse(&answer) {
                Ok(v) => return Ok(Ok(v)),
                Err(why) => writeln!(self.out, "  {why}")?,
            }
        }
    }
}

fn yes_no(a: &str) -> Result<bool, String> {
    match a.to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        _ => Err("answer y or n".into()),
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "y"
    } else {
        "n"
    }
}

macro_rules! answer {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(Eof) => return Ok(None),
        }
    };
}

/// Runs the setup dialogue from `base`. `Ok(None)` when input ended before the last question.
/// The password is read through `secret` when given (a terminal with echo off), else from
/// `input` like every other answer.
///
/// # Errors
/// I/O errors on the terminal.
pub fn setup<'a>(
    base: Profile,
    input: &'a mut dyn BufRead,
    out: &'a mut dyn Write,
    secret: Option<SecretReader<'a>>,
    devices: &[String],
) -> io::Result<Option<Choice>> {
    let mut p = base;
    let mut q = Prompter { input, out, secret };
    writeln!(
        q.out,
        "EchoWarp setup. Press Enter to keep the value in brackets."
    )?;
    let role_default = match p.role {
        Role::Server => "server",
        Role::Client => "client",
    };
    p.role = answer!(q.ask_parsed(
        "Role: server (capture and send) or client (receive and play)",
        role_default,
        |a| {
            match a.to_ascii_lowercase().as_str() {
                "server" | "s" => Ok(Role::Server),
                "client" | "c" => Ok(Role::Client),
                _ => Err("answer server or client".into()),
            }
        }
    ));
    if p.role == Role::Client {
        let current = p.server_address.clone();
        p.server_address =
            answer!(
                q.ask_parsed("Server address (host name or IP)", &current, |a| {
                    if a.trim().is_empty() {
                        Err("a client needs the server's address".into())
                    } else {
                        Ok(a.trim().to_owned())
                    }
                })
            );
    }
    p.port = answer!(
        q.ask_parsed("Port (TCP and UDP)", &p.port.to_string(), |a| {
            a.parse::<u16>()
                .ok()
                .filter(|&v| v != 0)
                .ok_or_else(|| "a port is a number from 1 to 65535".to_owned())
        })
    );
    if !devices.is_empty() {
        writeln!(q.out, "Devices:")?;
        for d in devices {
            writeln!(q.out, "  {d}")?;
        }
    }
    let current = p.device.clone();
    p.device = answer!(q.ask_parsed(
        "Device (index, name, default, wav:PATH, tone:HZ, null)",
        &current,
        |a| {
            DeviceSpec::parse(a)
                .map(|_| a.to_owned())
                .map_err(|e| e.to_string())
        }
    ));
    if p.role == Role::Server {
        let out_default = yn(p.device_kind == DeviceKind::Output);
        let capture_output = answer!(q.ask_parsed(
            "Capture what an output device plays (y/n)",
            out_default,
            yes_no
        ));
        p.device_kind = if capture_output {
            DeviceKind::Output
        } else {
            DeviceKind::Input
        };
    }
    let pw_shown = if p.password.is_empty() {
        "none"
    } else {
        "keep"
    };
    let pw = answer!(q.ask_secret("Password (none for no password)", pw_shown));
    match pw.as_str() {
        "keep" => {}
        "none" => p.password = Password::default(),
        other => p.password = Password::from(other),
    }
    if p.role == Role::Server && p.password.is_empty() {
        writeln!(
            q.out,
            "  No password: anyone on your local networks can listen, and clients from other addresses are refused (allow_anonymous in the profile serves them too)."
        )?;
    }
    if p.role == Role::Server {
        p.encryption = answer!(q.ask_parsed("Encrypt audio (y/n)", yn(p.encryption), yes_no));
        if !p.encryption {
            p.integrity = answer!(q.ask_parsed(
                "Tag every packet for integrity (y/n)",
                yn(p.integrity),
                yes_no
            ));
        }
        p.max_clients =
            answer!(
                q.ask_parsed("Most clients at once", &p.max_clients.to_string(), |a| {
                    a.parse::<u32>()
                        .ok()
                        .filter(|&v| v > 0)
                        .ok_or_else(|| "a whole number, at least 1".to_owned())
                })
            );
    }
    let what = if p.role == Role::Server {
        "Failed logins before a ban (0 = never)"
    } else {
        "Connection attempts (0 = forever)"
    };
    p.reconnect_attempts = answer!(q.ask_parsed(what, &p.reconnect_attempts.to_string(), |a| {
        a.parse::<u32>().map_err(|_| "a whole number".to_owned())
    }));
    let save = answer!(q.ask_parsed("Save these settings as your profile (y/n)", "y", yes_no));
    Ok(Some(Choice { profile: p, save }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> Option<Choice> {
        let mut out = Vec::new();
        setup(
            Profile::default(),
            &mut input.as_bytes(),
            &mut out,
            None,
            &[],
        )
        .expect("no I/O error")
    }

    #[test]
    fn enter_keeps_every_default() {
        let c = run("\n\n\n\n\n\n\n\n\n").expect("completed");
        assert_eq!(c.profile, Profile::default());
        assert!(c.save);
    }

    #[test]
    fn client_answers_and_retries_bad_input() {
        let c = run("client\n\nhost.lan\n99999\n5000\nnull\nsecret\n3\nn\n").expect("completed");
        assert_eq!(c.profile.role, Role::Client);
        assert_eq!(c.profile.server_address, "host.lan");
        assert_eq!(c.profile.port, 5000);
        assert_eq!(c.profile.device, "null");
        assert_eq!(c.profile.password.expose(), "secret");
        assert_eq!(c.profile.reconnect_attempts, 3);
        assert!(!c.save);
    }

    #[test]
    fn the_password_goes_through_the_secret_reader_and_is_never_echoed() {
        let mut out = Vec::new();
        let mut asked = 0;
        let mut secret = || {
            asked += 1;
            Ok(Some("s3cret phrase\n".to_owned()))
        };
        let c = setup(
            Profile::default(),
            &mut "client\nhost.lan\n\n\n3\nn\n".as_bytes(),
            &mut out,
            Some(&mut secret),
            &[],
        )
        .expect("no I/O error")
        .expect("completed");
        assert_eq!(asked, 1);
        assert_eq!(c.profile.password.expose(), "s3cret phrase");
        assert_eq!(c.profile.reconnect_attempts, 3);
        let shown = String::from_utf8(out).expect("text");
        assert!(shown.contains("(not shown)"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn end_of_input_cancels() {
        assert!(run("").is_none());
        assert!(run("server\n4415\n").is_none());
    }
}
