//! A client written from the protocol's public pieces, for tests that play hostile or
//! legitimate peers from chosen source addresses (127.0.0.0/8 gives many).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use std::io::ErrorKind;

use echowarp::protocol::frame::{encode_frame, Message, SessionParams};
use echowarp::protocol::ident::Ident;
use echowarp::protocol::keys::SessionKeys;
use echowarp::protocol::session::{ClientEnd, ClientEvent, ClientSession, Session};
use echowarp::protocol::Password;

/// A TCP connection to 127.0.0.1:`port` from `local` (any 127.x.y.z).
pub fn connect_from(local: &str, port: u16) -> std::io::Result<TcpStream> {
    connect_between(local, ([127, 0, 0, 1], port).into())
}

/// A TCP connection to `remote` from `local` (an address this host, or this thread's network
/// namespace, may bind).
pub fn connect_between(local: &str, remote: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let local: IpAddr = local.parse().expect("local address");
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::STREAM,
        None,
    )?;
    s.bind(&SocketAddr::new(local, 0).into())?;
    s.connect_timeout(&remote.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Sends one control frame in the clear (a rogue peer's words).
pub fn send_frame(tcp: &mut TcpStream, msg: &Message) {
    let mut body = Vec::new();
    msg.encode(&mut body);
    let mut framed = Vec::new();
    encode_frame(&body, &mut framed).expect("small frame");
    let _ = tcp.write_all(&framed);
}

/// Reads one line (a status or an identification), within `timeout`.
pub fn read_line(tcp: &mut TcpStream, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        let left = deadline.checked_duration_since(Instant::now())?;
        tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match tcp.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
    String::from_utf8(line).ok()
}

/// How a login ended.
#[derive(Debug)]
pub enum Login {
    /// The server confirmed the password; the session's keys and parameters.
    Confirmed {
        tcp: TcpStream,
        keys: Box<SessionKeys>,
        params: SessionParams,
    },
    /// The server refused before the handshake, with this status line.
    Refused(String),
    /// The server said the password was wrong.
    WrongPassword,
    /// The connection closed, or nothing came within the time.
    NoAnswer,
}

impl Login {
    pub fn confirmed(&self) -> bool {
        matches!(self, Login::Confirmed { .. })
    }
}

/// One login from `local` to 127.0.0.1:`port` with `password`, every step within `timeout`.
pub fn login_from(local: &str, port: u16, password: &str, timeout: Duration) -> Login {
    login_between(local, ([127, 0, 0, 1], port).into(), password, timeout)
}

/// One login from `local` to `remote` with `password`, by the client's own session state
/// machine, waiting at most `timeout` for each answer.
pub fn login_between(local: &str, remote: SocketAddr, password: &str, timeout: Duration) -> Login {
    let Ok(mut tcp) = connect_between(local, remote) else {
        return Login::NoAnswer;
    };
    let mut s = ClientSession::new(Ident::ours(None), Password::from(password), Instant::now());
    let mut waited_since = Instant::now();
    loop {
        while let Some(bytes) = s.poll_transmit() {
            if tcp.write_all(&bytes).is_err() {
                return Login::NoAnswer;
            }
        }
        while let Some(event) = s.poll_event() {
            match event {
                ClientEvent::Connected { params, keys } => {
                    return Login::Confirmed { tcp, keys, params }
                }
                ClientEvent::Ended(ClientEnd::Refused(status)) => {
                    return Login::Refused(status.to_line().trim_end().to_owned())
                }
                ClientEvent::Ended(ClientEnd::NotEchoWarp(said)) => {
                    return Login::Refused(said.trim_end().to_owned())
                }
                ClientEvent::Ended(ClientEnd::WrongPassword) => return Login::WrongPassword,
                ClientEvent::Ended(_) => return Login::NoAnswer,
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= waited_since + timeout {
            return Login::NoAnswer;
        }
        let due = s
            .poll_timeout()
            .map_or(now, |t| t.min(waited_since + timeout));
        if due <= now {
            s.handle_timeout(now);
            continue;
        }
        let _ = tcp.set_read_timeout(Some(due - now));
        let mut buf = [0u8; 4096];
        match tcp.read(&mut buf) {
            Ok(0) => s.handle_closed(Instant::now(), None),
            Ok(n) => {
                waited_since = Instant::now();
                s.handle_input(waited_since, &buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => s.handle_closed(Instant::now(), Some(e.to_string())),
        }
    }
}

/// Holds connections from `addrs` open until `stop`: up to `per_addr` each, sending nothing
/// (`trickle` false) or one byte of an identification every 300 ms. Returns how many
/// connections it made.
pub fn occupy(
    addrs: Vec<String>,
    port: u16,
    per_addr: usize,
    trickle: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut made = 0;
        // (connection, its address, bytes of the line sent)
        let mut held: Vec<(std::net::TcpStream, usize, usize)> = Vec::new();
        let line = b"ECHOWARP/1.1 slowloris-0.1\n";
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Forget what the server closed or answered; trickle on the others.
            held.retain_mut(|(t, _, sent)| {
                let _ = t.set_nonblocking(true);
                let mut b = [0u8; 64];
                let open =
                    matches!(t.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
                if open && trickle && *sent < line.len() - 1 {
                    let _ = t.write(&line[*sent..*sent + 1]);
                    *sent += 1;
                }
                open
            });
            // Keep `per_addr` open per address (more than the server allows, to test it).
            for (i, a) in addrs.iter().enumerate() {
                let mine = held.iter().filter(|(_, of, _)| *of == i).count();
                for _ in mine..per_addr {
                    if let Ok(t) = connect_from(a, port) {
                        made += 1;
                        held.push((t, i, 0));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        made
    })
}
