//! ALSA's and JACK's own messages go to our log at debug level instead of stderr.
//!
//! Probing ALSA's devices on a machine with no sound card, or reaching a sound server that went
//! away, makes alsa-lib print its errors (`ALSA lib confmisc.c:165:(snd_config_get_card) Cannot
//! get card index for 0`) and, through ALSA's JACK plug-in, libjack print its own (`jack server
//! is not running or cannot be started`): two dozen lines before anything of ours, at every
//! start and at every attempt to open a lost device again. Both libraries let a program take
//! the messages: alsa-lib per thread ([`this_thread`]), libjack once per process.
//!
//! Calls C directly: each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
use std::ffi::{c_char, c_int, CStr};

/// Takes alsa-lib's messages on the calling thread (and, once per process, libjack's): call it
/// on every thread before it touches ALSA. Cheap: it sets a thread-local pointer.
pub(super) fn this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: alsa-lib keeps the pointer in a thread-local variable and calls it, instead
        // of printing, with the arguments of its own error reports; `alsa_message` has exactly
        // the signature of `snd_local_error_handler_t` and lives for the whole program.
        unsafe {
            alsa_sys::snd_lib_error_set_local(Some(alsa_message));
        }
        jack_once();
    }
}

#[cfg(target_os = "linux")]
fn text<'a>(p: *const c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        std::borrow::Cow::Borrowed("")
    } else {
        // SAFETY: alsa-lib and libjack pass NUL-terminated strings that stay valid for the
        // call, and `p` is used only within it.
        unsafe { CStr::from_ptr(p) }.to_string_lossy()
    }
}

/// alsa-lib's report: the format is logged as it stands (its arguments come in a `va_list`,
/// which Rust cannot read portably).
#[cfg(target_os = "linux")]
unsafe extern "C" fn alsa_message(
    file: *const c_char,
    line: c_int,
    function: *const c_char,
    err: c_int,
    fmt: *const c_char,
    _args: *mut alsa_sys::__va_list_tag,
) {
    tracing::debug!(
        "alsa-lib {}:{line} ({}): {} [{err}]",
        text(file),
        text(function),
        text(fmt).trim_end()
    );
}

#[cfg(target_os = "linux")]
extern "C" fn jack_message(message: *const c_char) {
    tracing::debug!("libjack: {}", text(message).trim_end());
}

/// Points libjack's error and information functions at our log, if libjack is installed (ALSA's
/// JACK plug-in loads it when the `jack` device is probed; loading it first makes both one
/// library, which stays loaded for the life of the process).
#[cfg(target_os = "linux")]
fn jack_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: dlopen with a constant, NUL-terminated name; a null handle (no libjack) is
        // checked. The handle is never closed, so the functions found stay valid.
        let lib = unsafe { libc::dlopen(c"libjack.so.0".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return;
        }
        for name in [c"jack_set_error_function", c"jack_set_info_function"] {
            // SAFETY: a lookup in the handle just checked, by a constant name.
            let found = unsafe { libc::dlsym(lib, name.as_ptr()) };
            if found.is_null() {
                continue;
            }
            type Setter = unsafe extern "C" fn(Option<extern "C" fn(*const c_char)>);
            // SAFETY: jack/jack.h declares both as `void f(void (*func)(const char *))`, which
            // `Setter` is; `found` is that function's address in the loaded library.
            let set: Setter = unsafe { std::mem::transmute::<*mut libc::c_void, Setter>(found) };
            // SAFETY: called as declared, with a function that lives for the whole program.
            unsafe { set(Some(jack_message)) };
        }
    });
}
