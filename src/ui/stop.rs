//! Requests from outside to stop (DESIGN.md §3.2): Ctrl-C, SIGTERM and SIGHUP on Unix; Ctrl-C,
//! Ctrl-Break, closing the console, logging off and shutting down on Windows. Each stops the
//! engine as a user's Stop would, so a recording is finalised before the process ends.
//!
//! The `ctrlc` crate (feature `termination`) serves both platforms. One gap is left on Windows:
//! for a console close, log-off or shutdown, Windows ends the process as soon as the console
//! control handler returns, and `ctrlc`'s handler returns at once. [`install`] therefore adds a
//! handler of its own there, called before `ctrlc`'s, that asks the engine to stop and holds the
//! process until the engine has finished (or Windows' own limit of about 5 s is near).

use crate::engine::{Command, CommandSender};

/// Held while the engine runs; dropping it (after the engine has finished) lets a Windows
/// console-close handler that waits for the engine return.
#[derive(Debug)]
pub struct StopGuard(());

impl Drop for StopGuard {
    fn drop(&mut self) {
        #[cfg(windows)]
        console_close::finished();
    }
}

/// Routes every outside stop request to `stopper` for the rest of the process.
///
/// # Errors
/// The handler cannot be installed (a second call in one process, or the system refused).
pub fn install(stopper: CommandSender) -> Result<StopGuard, String> {
    #[cfg(windows)]
    console_close::install(stopper.clone())?;
    ctrlc::set_handler(move || stopper.send(Command::Stop))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(StopGuard(()))
}

#[cfg(windows)]
mod console_close {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::Duration;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
    };

    use crate::engine::{Command, CommandSender};

    /// Windows gives a close handler 5 s (`SPI_GETHUNGAPPTIMEOUT`'s default) before it ends
    /// the process itself; returning a little earlier keeps the exit ours.
    const HOLD_AT_MOST: Duration = Duration::from_millis(4500);

    static STOPPER: OnceLock<Mutex<CommandSender>> = OnceLock::new();
    static FINISHED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

    pub(super) fn install(stopper: CommandSender) -> Result<(), String> {
        STOPPER
            .set(Mutex::new(stopper))
            .map_err(|_| "the console close handler is installed already".to_owned())?;
        // SAFETY: `on_console_event` is a plain `extern "system"` function with the
        // `PHANDLER_ROUTINE` signature; it lives for the whole program and touches only
        // statics that are `Sync` (a `OnceLock`, `Mutex`es and a `Condvar`), so Windows may call
        // it on any thread at any time.
        #[allow(unsafe_code)]
        let ok = unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) };
        if ok == 0 {
            return Err(format!(
                "cannot install the console close handler: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    pub(super) fn finished() {
        let (lock, cv) = &FINISHED;
        if let Ok(mut done) = lock.lock() {
            *done = true;
            cv.notify_all();
        }
    }

    /// Runs on a thread Windows creates for the event. Ctrl-C and Ctrl-Break are left to the
    /// next handler (`ctrlc`'s); the events after which Windows ends the process wait here for
    /// the engine to finish.
    extern "system" fn on_console_event(event: u32) -> BOOL {
        if !matches!(
            event,
            CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT
        ) {
            return 0;
        }
        if let Some(Ok(stopper)) = STOPPER.get().map(Mutex::lock) {
            stopper.send(Command::Stop);
        }
        let (lock, cv) = &FINISHED;
        if let Ok(done) = lock.lock() {
            let _ = cv.wait_timeout_while(done, HOLD_AT_MOST, |done| !*done);
        }
        1
    }
}
