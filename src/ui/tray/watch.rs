//! Following the profile file on disk while the tray runs.

use std::path::Path;
use std::thread;
use std::time::Duration;

use tao::event_loop::EventLoopProxy;

use super::UserEvent;

/// Writes closer together than this are one change (editors write, rename and chmod in a burst).
const PROFILE_DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the profile's folder, not the file: editors (and our own atomic writes) replace the
/// file by renaming a new one over it, which ends a watch on the old file. One
/// [`UserEvent::ProfileChanged`] is sent per burst of writes.
pub(super) fn watch_profile(
    path: &Path,
    proxy: EventLoopProxy<UserEvent>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path.file_name().map(ToOwned::to_owned);
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let ours = event.paths.iter().any(|p| p.file_name() == name.as_deref());
        let written = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        if ours && written {
            let _ = tx.send(());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    thread::Builder::new()
        .name("profile watch".into())
        .spawn(move || {
            // Ends when the watcher (and with it `tx`) is dropped.
            while rx.recv().is_ok() {
                while rx.recv_timeout(PROFILE_DEBOUNCE).is_ok() {}
                if proxy.send_event(UserEvent::ProfileChanged).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(watcher)
}
