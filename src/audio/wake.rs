//! A wake-up from one thread to another that waits on a socket, so that the waiter looks when
//! there is something to see rather than on a timer.
//!
//! From an audio device's callback to the thread that packs its audio, a packet leaves as soon
//! as its last sample is captured rather than at a guess of when it might be: a guess made when
//! half a frame is there sleeps a whole device period if the next callback comes a little late,
//! which 2.5 ms callbacks often do. Between the engine's threads, a stop, a stream's end or a
//! thread that finished is seen at once by threads that otherwise sleep until the next
//! heartbeat.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// An eventfd one thread signals and another polls beside its socket. Only where the OS has
/// one (Linux); elsewhere [`Wake::new`] gives `None` and the waiter polls on a short timer
/// instead.
///
/// A waiter that needs a certain amount (a packet's worth of a device's ring) says so with
/// [`Wake::want`], and a signaller that knows how much it holds rings with
/// [`Wake::notify_at`]: only once there is enough. A 20 ms packet over 5 ms callbacks is then
/// one wake-up, not four.
#[derive(Debug)]
pub struct Wake {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    /// What the waiter waits for, in the signaller's units; 0 (the start): any delivery.
    wanted: AtomicUsize,
}

impl Wake {
    /// A new, unsignalled wake-up, if the OS offers one.
    pub fn new() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            use rustix::event::{eventfd, EventfdFlags};
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .ok()
                .map(|fd| Self {
                    fd,
                    wanted: AtomicUsize::new(0),
                })
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

    /// Says that the waiter needs `amount` held before a signal is worth its wake-up. Call it
    /// before looking at what is held: with the fence in [`Wake::notify_at`], either the waiter
    /// sees what a delivery added or the signaller sees the amount wanted, never neither (so no
    /// wake-up is lost between the look and the wait).
    pub fn want(&self, amount: usize) {
        self.wanted.store(amount, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Signals the poller if `held` (counted after the delivery was published) is at least what
    /// it wants. Real-time safe, as [`Wake::notify`].
    pub fn notify_at(&self, held: usize) {
        fence(Ordering::SeqCst);
        if held >= self.wanted.load(Ordering::Relaxed) {
            self.notify();
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
    fn notify_at_rings_only_once_what_is_wanted_is_held() {
        let w = Wake::new().expect("eventfd");
        w.notify_at(1);
        assert!(readable(&w), "nothing wanted yet: any delivery rings");
        w.drain();
        w.want(960);
        w.notify_at(240);
        w.notify_at(959);
        assert!(!readable(&w), "short of the packet");
        w.notify_at(960);
        assert!(readable(&w), "a whole packet held");
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
