//! A wake-up from one thread to another that waits on a socket, so that the waiter looks when
//! there is something to see rather than on a timer.
//!
//! From an audio device's callback to the thread that packs its audio, a packet leaves as soon
//! as its last sample is captured rather than at a guess of when it might be: a guess made when
//! half a frame is there sleeps a whole device period if the next callback comes a little late,
//! which 2.5 ms callbacks often do. Between the engine's threads, a stop, a stream's end or a
//! thread that finished is seen at once by threads that otherwise sleep until the next
//! heartbeat.

/// An eventfd one thread signals and another polls beside its socket. Only where the OS has
/// one (Linux); elsewhere [`Wake::new`] gives `None` and the waiter polls on a short timer
/// instead.
#[derive(Debug)]
pub struct Wake {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
}

impl Wake {
    /// A new, unsignalled wake-up, if the OS offers one.
    pub fn new() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            use rustix::event::{eventfd, EventfdFlags};
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .ok()
                .map(|fd| Self { fd })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Signals the poller. Real-time safe: one non-blocking write(2) of 8 bytes to a kernel
    /// counter, no lock and no allocation in user space. A full counter (2^64 - 2 unread
    /// signals) only means the poller is already due to wake, so a failure is ignored.
    pub fn notify(&self) {
        #[cfg(target_os = "linux")]
        {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Clears the signal (after a poll saw it).
    pub fn drain(&self) {
        #[cfg(target_os = "linux")]
        {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&self.fd, &mut count);
        }
    }

    /// Waits up to `timeout` for a signal; true (and the signal cleared) if one came.
    #[cfg(target_os = "linux")]
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let ts = timespec(timeout);
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let rung = matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0);
        if rung {
            self.drain();
        }
        rung
    }

    /// The descriptor to poll for readability.
    #[cfg(target_os = "linux")]
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// `d` for poll(2); a wait too long for a `Timespec` (centuries) is as good as for ever.
#[cfg(unix)]
pub(crate) fn timespec(d: std::time::Duration) -> rustix::event::Timespec {
    rustix::event::Timespec::try_from(d).unwrap_or(rustix::event::Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    fn readable(w: &Wake) -> bool {
        let mut fds = [PollFd::new(&w.fd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).unwrap_or(0) > 0
    }

    #[test]
    fn a_notify_makes_it_readable_until_drained() {
        let w = Wake::new().expect("eventfd");
        assert!(!readable(&w));
        w.notify();
        w.notify();
        assert!(readable(&w));
        w.drain();
        assert!(!readable(&w), "one drain clears any number of signals");
    }

    #[test]
    fn wait_returns_at_a_signal_or_its_timeout() {
        let w = Wake::new().expect("eventfd");
        let started = std::time::Instant::now();
        assert!(
            !w.wait(std::time::Duration::from_millis(30)),
            "nothing signalled"
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(30));
        w.notify();
        assert!(w.wait(std::time::Duration::from_secs(10)), "signalled");
        assert!(!readable(&w), "the wait cleared the signal");
    }

    #[test]
    fn a_notify_from_another_thread_wakes_a_poll() {
        let w = std::sync::Arc::new(Wake::new().expect("eventfd"));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w2.notify();
        });
        let mut fds = [PollFd::new(&w.fd, PollFlags::IN)];
        let ten_s = Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        let started = std::time::Instant::now();
        assert_eq!(poll(&mut fds, Some(&ten_s)).expect("poll"), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        t.join().expect("thread");
    }
}
