//! Windows only: the tray's menu opens on a click even where the shell cannot say where the
//! icon is.
//!
//! tray-icon drops a click on the icon when `Shell_NotifyIconGetRect` fails, before it shows
//! the menu. Real Windows answers that call; Wine 8 (a stub) and shells that replace Explorer
//! may not, and then the icon could never be clicked. The tray's hidden window is subclassed
//! here: a button release on the icon whose rectangle cannot be had opens the current menu at
//! the cursor, as tray-icon itself would; every other message goes on to tray-icon unchanged.
//! (Offered upstream, this is a fall-back to the cursor position inside tray-icon.)
//!
//! Calls Win32 directly: each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::cell::Cell;

use tray_icon::menu::ContextMenu;
use tray_icon::TrayIcon;
use windows_sys::Win32::Foundation::{HWND, LPARAM, LRESULT, POINT, RECT, S_OK, WPARAM};
use windows_sys::Win32::UI::Shell::{
    DefSubclassProc, SetWindowSubclass, Shell_NotifyIconGetRect, NOTIFYICONIDENTIFIER,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    GetCursorPos, PostMessageW, SetForegroundWindow, TrackPopupMenu, TPM_BOTTOMALIGN,
    TPM_LEFTALIGN, WM_LBUTTONUP, WM_NULL, WM_RBUTTONUP,
};

/// The callback message tray-icon 0.26 registers its icon with (`WM_USER_TRAYICON`, private
/// to it). Its legacy notify-icon version puts the icon's id in `wParam` and the mouse message
/// in `lParam`. Checked by the Wine tray test: if a tray-icon update changes it, the menu no
/// longer opens there.
const TRAY_CALLBACK: u32 = 6002;

/// Our subclass's id on the window (any value unique among the window's subclasses).
const SUBCLASS_ID: usize = 0x4577_6172; // "EWar"

thread_local! {
    /// The menu tray-icon holds now (`HMENU` as an integer; 0: none). Written on the thread
    /// that owns the tray window, the only one its window procedure runs on.
    static MENU: Cell<isize> = const { Cell::new(0) };
}

/// Subclasses the tray's window once, right after the icon is made.
pub(super) fn install(tray: &TrayIcon) {
    let hwnd = tray.window_handle();
    // SAFETY: `hwnd` is the live window tray-icon made on this thread (SetWindowSubclass must
    // be called from the owning thread; the tray's event loop runs here). `fallback` matches
    // SUBCLASSPROC's signature and reads no reference data. The subclass lives as long as the
    // window: comctl32 removes it when the window is destroyed.
    let ok = unsafe { SetWindowSubclass(hwnd, Some(fallback), SUBCLASS_ID, 0) };
    if ok == 0 {
        tracing::warn!("tray: cannot watch the icon's clicks; the shell must place its menu");
    }
}

/// Sets the menu and remembers its handle for [`fallback`].
pub(super) fn set_menu(tray: &TrayIcon, menu: tray_icon::menu::Menu) {
    let handle = menu.hpopupmenu();
    tray.set_menu(Some(Box::new(menu)));
    MENU.with(|m| m.set(handle));
}

/// Forgets the menu (the icon is going).
pub(super) fn forget() {
    MENU.with(|m| m.set(0));
}

unsafe extern "system" fn fallback(
    hwnd: HWND,
    msg: u32,
    wparam: WPARAM,
    lparam: LPARAM,
    _id: usize,
    _data: usize,
) -> LRESULT {
    let mouse = lparam as u32;
    if msg == TRAY_CALLBACK && (mouse == WM_LBUTTONUP || mouse == WM_RBUTTONUP) {
        let menu = MENU.with(Cell::get);
        if menu != 0 && !shell_knows_rect(hwnd, wparam as u32) {
            let mut at = POINT { x: 0, y: 0 };
            // SAFETY: plain Win32 calls on this thread's own window with a pointer to a local
            // POINT. The HMENU is the one tray-icon holds now (MENU is updated in the same
            // thread right after every set_menu, and the old menu is only freed by set_menu),
            // so it is alive while the popup tracks; a WM_COMMAND it posts goes to `hwnd`,
            // where muda's own subclass turns it into a MenuEvent.
            unsafe {
                if GetCursorPos(&mut at) != 0 {
                    // Foreground first, so a click elsewhere closes the menu (the shell's rule).
                    SetForegroundWindow(hwnd);
                    TrackPopupMenu(
                        menu as _,
                        TPM_BOTTOMALIGN | TPM_LEFTALIGN,
                        at.x,
                        at.y,
                        0,
                        hwnd,
                        std::ptr::null(),
                    );
                    PostMessageW(hwnd, WM_NULL, 0, 0);
                }
            }
            return 0;
        }
    }
    // SAFETY: the arguments are the ones this window procedure was called with.
    unsafe { DefSubclassProc(hwnd, msg, wparam, lparam) }
}

/// Whether the shell can give the icon's rectangle (tray-icon then handles the click itself).
fn shell_knows_rect(hwnd: HWND, id: u32) -> bool {
    // SAFETY: NOTIFYICONIDENTIFIER is plain data for which all-zero is valid (no GUID).
    let mut who: NOTIFYICONIDENTIFIER = unsafe { std::mem::zeroed() };
    who.cbSize = std::mem::size_of::<NOTIFYICONIDENTIFIER>() as u32;
    who.hWnd = hwnd;
    who.uID = id;
    let mut rect = RECT {
        left: 0,
        top: 0,
        right: 0,
        bottom: 0,
    };
    // SAFETY: both pointers are to locals that outlive the call.
    unsafe { Shell_NotifyIconGetRect(&who, &mut rect) == S_OK }
}
