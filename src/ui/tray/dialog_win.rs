//! Windows only: the tray's dialogs as one small Win32 window of labelled text fields (a
//! password field shows dots) with Cancel and an accept button.
//!
//! Modeless, on the tray's thread, whose event loop pumps its messages: the loop is not ours,
//! so there is no `IsDialogMessage`; each field is subclassed instead, and Return moves to the
//! next field (on the last, accepts), Tab moves on, Escape cancels.
//!
//! Calls Win32 directly: each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;

use windows_sys::Win32::Foundation::{HWND, LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::Graphics::Gdi::{GetStockObject, COLOR_BTNFACE, DEFAULT_GUI_FONT};
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::UI::Input::KeyboardAndMouse::{SetFocus, VK_ESCAPE, VK_RETURN, VK_TAB};
use windows_sys::Win32::UI::Shell::{DefSubclassProc, SetWindowSubclass};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    CreateWindowExW, DefWindowProcW, DestroyWindow, GetSystemMetrics, GetWindowLongPtrW,
    GetWindowTextLengthW, GetWindowTextW, LoadCursorW, PostMessageW, RegisterClassW, SendMessageW,
    SetForegroundWindow, SetWindowLongPtrW, ShowWindow, BS_DEFPUSHBUTTON, BS_PUSHBUTTON,
    CW_USEDEFAULT, ES_AUTOHSCROLL, ES_PASSWORD, GWLP_USERDATA, IDC_ARROW, SM_CXSCREEN, SM_CYSCREEN,
    SW_SHOW, WM_CHAR, WM_CLOSE, WM_COMMAND, WM_KEYDOWN, WM_NCDESTROY, WM_SETFONT, WNDCLASSW,
    WS_CAPTION, WS_CHILD, WS_EX_CLIENTEDGE, WS_EX_DLGMODALFRAME, WS_EX_TOPMOST, WS_OVERLAPPED,
    WS_SYSMENU, WS_TABSTOP, WS_VISIBLE,
};

/// One text field.
pub(super) struct Field<'a> {
    /// Its label.
    pub label: &'a str,
    /// Its text to begin with.
    pub text: &'a str,
    /// Shown as dots.
    pub secret: bool,
}

/// An open dialog's fields and what to do with their texts; owned by its window (boxed in its
/// user data) from creation to `WM_NCDESTROY`.
struct Open {
    edits: Vec<HWND>,
    done: Box<dyn Fn(Vec<String>)>,
}

/// Selects a range of an edit control's text (winuser.h's value; windows-sys keeps it behind
/// its whole `Win32_UI_Controls` feature).
const EM_SETSEL: u32 = 0x00B1;

const ID_ACCEPT: usize = 1;
const ID_CANCEL: usize = 2;
const SUBCLASS_ID: usize = 0x4577_4466; // "EwDf"

thread_local! {
    /// The window class is registered once per thread (the tray's).
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Opens the dialog; `done` hears the fields' texts when it is accepted. False when the window
/// cannot be made (the caller falls back to the profile).
pub(super) fn ask(
    title: &str,
    fields: &[Field<'_>],
    accept: &str,
    done: impl Fn(Vec<String>) + 'static,
) -> bool {
    let class = wide("EchoWarpDialog");
    // SAFETY: a null name asks for this executable's own module handle, valid for the life of
    // the process.
    let instance = unsafe { GetModuleHandleW(std::ptr::null()) };
    if !REGISTERED.with(Cell::get) {
        let wc = WNDCLASSW {
            lpfnWndProc: Some(window_proc),
            hInstance: instance,
            // SAFETY: IDC_ARROW is a system cursor; a null instance asks for the system's.
            hCursor: unsafe { LoadCursorW(std::ptr::null_mut(), IDC_ARROW) },
            // The system colour index plus one, as the class's background brush (Win32's
            // documented convention).
            hbrBackground: (COLOR_BTNFACE + 1) as usize as *mut c_void,
            lpszClassName: class.as_ptr(),
            ..WNDCLASSW::default()
        };
        // SAFETY: `wc` is fully initialised and `class` outlives the call (RegisterClassW
        // copies the name). `window_proc` matches WNDPROC.
        if unsafe { RegisterClassW(&wc) } == 0 {
            return false;
        }
        REGISTERED.with(|r| r.set(true));
    }
    let rows = fields.len() as i32;
    let (width, height) = (460, 34 * rows + 90);
    // SAFETY: plain queries of the primary screen's size.
    let screen = unsafe { (GetSystemMetrics(SM_CXSCREEN), GetSystemMetrics(SM_CYSCREEN)) };
    // In the middle of the screen, where the eye is after a click in the tray.
    let (x, y) = if screen.0 > width && screen.1 > height {
        ((screen.0 - width) / 2, (screen.1 - height) / 2)
    } else {
        (CW_USEDEFAULT, CW_USEDEFAULT)
    };
    let title_w = wide(title);
    // SAFETY: the class is registered on this thread; every pointer is a live NUL-terminated
    // UTF-16 string or null; a top-level window has no parent and no menu.
    let hwnd = unsafe {
        CreateWindowExW(
            WS_EX_TOPMOST | WS_EX_DLGMODALFRAME,
            class.as_ptr(),
            title_w.as_ptr(),
            WS_OVERLAPPED | WS_CAPTION | WS_SYSMENU,
            x,
            y,
            width,
            height,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            instance,
            std::ptr::null(),
        )
    };
    if hwnd.is_null() {
        return false;
    }
    // SAFETY: a stock object needs no release.
    let font = unsafe { GetStockObject(DEFAULT_GUI_FONT) } as usize;
    let child =
        |class: &str, text: &str, style: u32, ex: u32, rect: (i32, i32, i32, i32), id: usize| {
            let (c, t) = (wide(class), wide(text));
            // SAFETY: `hwnd` is the live dialog made above on this thread; the strings outlive the
            // call; a child's "menu" argument is its control id, as Win32 defines.
            let w = unsafe {
                CreateWindowExW(
                    ex,
                    c.as_ptr(),
                    t.as_ptr(),
                    WS_CHILD | WS_VISIBLE | style,
                    rect.0,
                    rect.1,
                    rect.2,
                    rect.3,
                    hwnd,
                    id as *mut c_void,
                    instance,
                    std::ptr::null(),
                )
            };
            if !w.is_null() {
                // SAFETY: WM_SETFONT takes a font handle and a redraw flag; `w` is a live
                // control.
                unsafe { SendMessageW(w, WM_SETFONT, font, 1) };
            }
            w
        };
    let mut edits = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let y = 16 + 34 * i as i32;
        child("STATIC", f.label, 0, 0, (14, y + 4, 90, 20), 0);
        let style =
            WS_TABSTOP | ES_AUTOHSCROLL as u32 | if f.secret { ES_PASSWORD as u32 } else { 0 };
        let edit = child(
            "EDIT",
            f.text,
            style,
            WS_EX_CLIENTEDGE,
            (110, y, 320, 24),
            100 + i,
        );
        if edit.is_null() {
            // SAFETY: `hwnd` is ours and live; nothing is attached to it yet.
            unsafe { DestroyWindow(hwnd) };
            return false;
        }
        // SAFETY: `edit` is a live child of `hwnd` on this thread; `edit_proc` matches
        // SUBCLASSPROC; the reference data is the dialog's handle, which outlives its children.
        unsafe { SetWindowSubclass(edit, Some(edit_proc), SUBCLASS_ID, hwnd as usize) };
        edits.push(edit);
    }
    let y = 22 + 34 * rows;
    child(
        "BUTTON",
        "Cancel",
        WS_TABSTOP | BS_PUSHBUTTON as u32,
        0,
        (230, y, 96, 28),
        ID_CANCEL,
    );
    child(
        "BUTTON",
        accept,
        WS_TABSTOP | BS_DEFPUSHBUTTON as u32,
        0,
        (334, y, 96, 28),
        ID_ACCEPT,
    );
    let first = edits.first().copied();
    let open = Box::new(Open {
        edits,
        done: Box::new(done),
    });
    // SAFETY: the box is handed to the window: `window_proc` reads it while the window lives
    // and frees it at WM_NCDESTROY, the window's last message; nothing else frees it.
    unsafe { SetWindowLongPtrW(hwnd, GWLP_USERDATA, Box::into_raw(open) as isize) };
    // SAFETY: `hwnd` and `first` are live windows of this thread.
    unsafe {
        ShowWindow(hwnd, SW_SHOW);
        SetForegroundWindow(hwnd);
        if let Some(e) = first {
            SetFocus(e);
            SendMessageW(e, EM_SETSEL, 0, -1);
        }
    }
    true
}

/// The dialog's state, while its window lives.
///
/// # Safety
/// `hwnd` must be a dialog made by [`ask`] that has not had `WM_NCDESTROY` yet, and the
/// reference must not be held across a call that can destroy it.
unsafe fn state<'a>(hwnd: HWND) -> Option<&'a Open> {
    // SAFETY: the caller's contract: the user data is null or the live box set in `ask`.
    unsafe { (GetWindowLongPtrW(hwnd, GWLP_USERDATA) as *const Open).as_ref() }
}

/// Reads a field's text.
fn text_of(edit: HWND) -> String {
    // SAFETY: `edit` is a live edit control; the buffer holds `len + 1` units, as asked.
    unsafe {
        let len = GetWindowTextLengthW(edit).max(0) as usize;
        let mut buf = vec![0u16; len + 1];
        let got = GetWindowTextW(edit, buf.as_mut_ptr(), buf.len() as i32).max(0) as usize;
        String::from_utf16_lossy(&buf[..got.min(len)])
    }
}

unsafe extern "system" fn window_proc(
    hwnd: HWND,
    msg: u32,
    wparam: WPARAM,
    lparam: LPARAM,
) -> LRESULT {
    match msg {
        WM_COMMAND => {
            match wparam & 0xFFFF {
                ID_ACCEPT => {
                    // SAFETY: a live dialog before its destruction; the texts are read and the
                    // callback run before DestroyWindow, after which `open` is not touched.
                    if let Some(open) = unsafe { state(hwnd) } {
                        let texts = open.edits.iter().map(|e| text_of(*e)).collect();
                        (open.done)(texts);
                    }
                    // SAFETY: our own window, on its thread.
                    unsafe { DestroyWindow(hwnd) };
                }
                // SAFETY: as above.
                ID_CANCEL => unsafe {
                    DestroyWindow(hwnd);
                },
                _ => {}
            }
            0
        }
        WM_CLOSE => {
            // SAFETY: our own window, on its thread.
            unsafe { DestroyWindow(hwnd) };
            0
        }
        WM_NCDESTROY => {
            // SAFETY: the window's last message: the box set in `ask` is taken back once and
            // the user data cleared, so nothing reads it after.
            unsafe {
                let p = SetWindowLongPtrW(hwnd, GWLP_USERDATA, 0) as *mut Open;
                if !p.is_null() {
                    drop(Box::from_raw(p));
                }
                DefWindowProcW(hwnd, msg, wparam, lparam)
            }
        }
        // SAFETY: every other message goes to the default procedure unchanged.
        _ => unsafe { DefWindowProcW(hwnd, msg, wparam, lparam) },
    }
}

/// A field's keys: Return moves to the next field or accepts on the last, Tab moves on (and
/// round), Escape cancels; everything else is the edit control's own.
unsafe extern "system" fn edit_proc(
    edit: HWND,
    msg: u32,
    wparam: WPARAM,
    lparam: LPARAM,
    _id: usize,
    dialog: usize,
) -> LRESULT {
    let dialog = dialog as HWND;
    let key = wparam as u16;
    match msg {
        WM_KEYDOWN if key == VK_RETURN || key == VK_TAB || key == VK_ESCAPE => {
            // SAFETY: the reference data is the live dialog that owns this field (children
            // die before their parent); `open` is not held past this block.
            let next = unsafe { state(dialog) }.and_then(|open| {
                let i = open.edits.iter().position(|e| *e == edit)?;
                Some((open.edits.get(i + 1).copied(), open.edits[0]))
            });
            // SAFETY: posting to and focusing live windows of this thread.
            unsafe {
                match (key, next) {
                    (VK_ESCAPE, _) => {
                        PostMessageW(dialog, WM_CLOSE, 0, 0);
                    }
                    (VK_RETURN, Some((None, _))) => {
                        PostMessageW(dialog, WM_COMMAND, ID_ACCEPT, 0);
                    }
                    (_, Some((Some(n), _))) => {
                        SetFocus(n);
                        SendMessageW(n, EM_SETSEL, 0, -1);
                    }
                    (_, Some((None, first))) => {
                        SetFocus(first);
                    }
                    (_, None) => {}
                }
            }
            0
        }
        // The characters of those keys would only beep.
        WM_CHAR if matches!(wparam, 0x0d | 0x09 | 0x1b) => 0,
        // SAFETY: every other message goes on to the edit control unchanged.
        _ => unsafe { DefSubclassProc(edit, msg, wparam, lparam) },
    }
}
