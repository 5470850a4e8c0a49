//! Socket set-up: dual-stack listeners, buffer sizes.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::audio::wake::Wake;

/// Binds TCP and UDP on the same port: `bind`, or `[::]` dual-stack (falling back to 0.0.0.0
/// where IPv6 is off). Port 0 picks a port free for both.
pub(crate) fn bind_pair(
    bind: Option<IpAddr>,
    port: u16,
    buffer: usize,
) -> io::Result<(TcpListener, UdpSocket)> {
    let candidates: Vec<(IpAddr, bool)> = match bind {
        Some(ip) => vec![(ip, false)],
        None => vec![
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), true),
            (IpAddr::from([0, 0, 0, 0]), false),
        ],
    };
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind");
    for (ip, dual) in candidates {
        // With port 0, retry a few times: the TCP port the OS picks may be taken for UDP.
        for _ in 0..if port == 0 { 20 } else { 1 } {
            match bind_one(ip, dual, port, buffer) {
                Ok(pair) => return Ok(pair),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

fn bind_one(
    ip: IpAddr,
    dual: bool,
    port: u16,
    buffer: usize,
) -> io::Result<(TcpListener, UdpSocket)> {
    let domain = if ip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if dual {
        tcp.set_only_v6(false)?;
    }
    // On Unix this lets a restarted server listen again while the last one's connections are
    // in TIME_WAIT. On Windows it would let a second server take the port from the first
    // without an error (and TIME_WAIT does not block a listener there): left off.
    if cfg!(not(windows)) {
        tcp.set_reuse_address(true)?;
    }
    tcp.bind(&SocketAddr::new(ip, port).into())?;
    tcp.listen(64)?;
    let tcp: TcpListener = tcp.into();
    let actual = tcp.local_addr()?.port();
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if dual {
        udp.set_only_v6(false)?;
    }
    set_buffers(&udp, buffer)?;
    udp.bind(&SocketAddr::new(ip, actual).into())?;
    Ok((tcp, udp.into()))
}

/// A client's UDP socket, connected to the server so the kernel drops foreign datagrams.
pub(crate) fn client_udp(server: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let domain = if server.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    set_buffers(&udp, buffer)?;
    let any: SocketAddr = if server.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    udp.bind(&any.into())?;
    udp.connect(&server.into())?;
    Ok(udp.into())
}

/// At least 256 KiB each way (about 1.3 s of 48 kHz stereo PCM), or more if asked.
fn set_buffers(s: &Socket, asked: usize) -> io::Result<()> {
    let size = asked.max(256 * 1024);
    // Best effort: the OS may cap it (net.core.rmem_max); a smaller buffer still works.
    let _ = s.set_recv_buffer_size(size);
    let _ = s.set_send_buffer_size(size);
    Ok(())
}

/// Readies a UDP socket for [`recv_within`].
pub(crate) fn prepare_for_polling(sock: &UdpSocket) -> io::Result<()> {
    // With poll(2) the socket itself never blocks.
    #[cfg(unix)]
    sock.set_nonblocking(true)?;
    #[cfg(not(unix))]
    let _ = sock;
    Ok(())
}

/// Receives one datagram, waiting at most `timeout`; `Ok(None)` when none came.
///
/// The wait uses poll(2) where there is one: its timer is precise to microseconds, where a
/// socket receive timeout (SO_RCVTIMEO) is rounded up to the kernel's tick, 10 ms on many
/// kernels, which would send 5 ms packets in pairs.
pub(crate) fn recv_within(
    sock: &UdpSocket,
    buf: &mut [u8],
    timeout: std::time::Duration,
) -> io::Result<Option<(usize, SocketAddr)>> {
    recv_within_or_wake(sock, None, buf, timeout)
}

/// [`recv_within`] that also returns (`Ok(None)`, the signal cleared) as soon as `wake` is
/// signalled: a capture device has delivered audio.
pub(crate) fn recv_within_or_wake(
    sock: &UdpSocket,
    wake: Option<&Wake>,
    buf: &mut [u8],
    timeout: std::time::Duration,
) -> io::Result<Option<(usize, SocketAddr)>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if !wait_readable(sock.as_fd(), wake, timeout)? {
            return Ok(None);
        }
    }
    #[cfg(not(unix))]
    let _ = wake;
    #[cfg(not(unix))]
    sock.set_read_timeout(Some(timeout.max(std::time::Duration::from_millis(1))))?;
    match sock.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The descriptor a wake-up can be polled on: its eventfd on Linux; elsewhere it has none, and
/// a wait then only ends on the socket or the timeout.
#[cfg(unix)]
fn pollable(wake: &Wake) -> Option<std::os::fd::BorrowedFd<'_>> {
    #[cfg(target_os = "linux")]
    return Some(wake.fd());
    #[cfg(not(target_os = "linux"))]
    {
        let _ = wake;
        None
    }
}

/// Waits up to `timeout` for `fd` to become readable or `wake` to be signalled, whichever
/// comes first; neither is a timeout (or a signal interrupted the wait).
///
/// poll(2)'s timer is precise to microseconds, where a socket receive timeout (SO_RCVTIMEO)
/// is rounded up to the kernel's tick, and it lets one thread wait on a socket and on other
/// threads at once instead of waking on a timer to look.
#[cfg(unix)]
pub(crate) fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    wake: Option<&Wake>,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let ts = crate::audio::wake::timespec(timeout);
    let wake_fd = wake.and_then(pollable);
    // The second entry is only polled when there is a wake-up to poll.
    let mut fds = [
        PollFd::from_borrowed_fd(fd, PollFlags::IN),
        PollFd::from_borrowed_fd(wake_fd.unwrap_or(fd), PollFlags::IN),
    ];
    let n = if wake_fd.is_some() { 2 } else { 1 };
    match poll(&mut fds[..n], Some(&ts)) {
        Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(false),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    if n == 2 && fds[1].revents().contains(PollFlags::IN) {
        if let Some(w) = wake {
            w.drain();
        }
    }
    Ok(fds[0]
        .revents()
        .intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP))
}
