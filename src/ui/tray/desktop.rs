//! What the tray asks of the desktop: icons, notifications, opening a folder, and whether
//! there is a desktop at all.

use std::path::PathBuf;
use std::thread;

use tray_icon::Icon;

use crate::ui::notice::Notice;

/// The tray's icons by name (`TrayView::icon_name`): one per state, and each crossed out for
/// mute.
pub(super) const ICONS: [(&str, &[u8]); 8] = [
    ("idle", include_bytes!("../../../icons/idle.png")),
    (
        "connecting",
        include_bytes!("../../../icons/connecting.png"),
    ),
    ("streaming", include_bytes!("../../../icons/streaming.png")),
    ("error", include_bytes!("../../../icons/error.png")),
    (
        "idle-muted",
        include_bytes!("../../../icons/idle-muted.png"),
    ),
    (
        "connecting-muted",
        include_bytes!("../../../icons/connecting-muted.png"),
    ),
    (
        "streaming-muted",
        include_bytes!("../../../icons/streaming-muted.png"),
    ),
    (
        "error-muted",
        include_bytes!("../../../icons/error-muted.png"),
    ),
];

pub(super) fn decode_icon(bytes: &[u8]) -> Option<Icon> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .ok()?;
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    if info.color_type != png::ColorType::Rgba {
        return None;
    }
    buf.truncate(info.buffer_size());
    Icon::from_rgba(buf, info.width, info.height).ok()
}

/// The AppUserModelID toasts are sent under on Windows. The installer registers it with a name
/// and an icon (installer/windows/main.wxs, `Software\Classes\AppUserModelId`): Windows shows an
/// unpackaged program's toasts only for a registered id.
pub const APP_USER_MODEL_ID: &str = "EchoWarp.EchoWarp";

/// Shows one notice on the desktop.
#[cfg(feature = "notifications")]
fn show(n: &Notice) -> Result<(), notify_rust::error::Error> {
    let mut note = notify_rust::Notification::new();
    note.appname("EchoWarp")
        .summary(&n.summary)
        .body(&n.body)
        .icon("audio-card");
    #[cfg(windows)]
    note.app_id(APP_USER_MODEL_ID);
    note.show().map(drop)
}

/// Built without notifications: every notice fails, and is said in the log only.
#[cfg(not(feature = "notifications"))]
fn show(_: &Notice) -> Result<(), &'static str> {
    Err("this build has no desktop notifications (built without the `notifications` feature)")
}

/// Shows notices on a thread of its own: a slow or missing notification service never stalls the
/// loop. Where there is no service, each failure is logged and the tray carries on.
pub(super) fn spawn_notifier() -> crossbeam_channel::Sender<Notice> {
    let (tx, rx) = crossbeam_channel::unbounded::<Notice>();
    let spawned = thread::Builder::new()
        .name("notifications".into())
        .spawn(move || {
            let mut told = false;
            for n in rx.iter() {
                tracing::info!("notification: {}: {}", n.summary, n.body);
                match show(&n) {
                    // Said once as a warning (with why), then quietly: the notices themselves
                    // are in the log line above.
                    Err(e) if !told => {
                        told = true;
                        tracing::warn!("no notification service, notices go to the log only: {e}");
                    }
                    Err(e) => tracing::debug!("notification not shown: {e}"),
                    Ok(_) => {}
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("notifications are off: {e}");
    }
    tx
}

/// Opens `path` with the desktop's own program for it (a folder in the file manager).
pub(super) fn open_with_desktop(path: PathBuf) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener).arg(&path).spawn() {
        tracing::warn!("cannot open {}: {e}", path.display());
    }
}

/// Whether a desktop session is there to show a tray in.
pub fn desktop_present() -> bool {
    cfg!(any(windows, target_os = "macos"))
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
}
