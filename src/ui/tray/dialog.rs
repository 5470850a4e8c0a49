//! The tray's two small dialogs: where to connect (a server found on the network or an address
//! typed in, and the password), and the password alone (a server's, or a client's). GTK 3 on
//! Linux, the toolkit the tray already runs on; a Win32 window on Windows (`dialog_win.rs`); on
//! macOS there is none yet and the caller opens the profile instead.
//!
//! Non-modal: the dialog answers through `done` on the loop's own thread, and the tray's event
//! loop runs on meanwhile (a dialog left open does not stop the stream or the menu).

use crate::protocol::Password;

/// What a dialog was told.
// macOS has no dialog yet (it opens the profile instead).
#[cfg_attr(target_os = "macos", allow(dead_code))]
pub(super) enum Answer {
    /// Connect to this server with this password.
    Server {
        /// A discovered server's name, a host name or an address.
        address: String,
        /// The password typed (empty: none).
        password: Password,
    },
    /// Use this password.
    Password(Password),
}

#[cfg(target_os = "linux")]
pub(super) use gtk_dialogs::{ask_password, ask_server};

/// Asks where to connect (a server found on the network fills the field when the profile
/// names none) and the password.
#[cfg(windows)]
pub(super) fn ask_server(
    servers: &[String],
    address: &str,
    password: &Password,
    done: impl Fn(Answer) + 'static,
) -> bool {
    use super::dialog_win::{ask, Field};
    let address = if address.trim().is_empty() {
        servers.first().map_or("", String::as_str)
    } else {
        address
    };
    let fields = [
        Field {
            label: "Server",
            text: address,
            secret: false,
        },
        Field {
            label: "Password",
            text: password.expose(),
            secret: true,
        },
    ];
    ask(
        "EchoWarp: connect to a server",
        &fields,
        "Connect",
        move |t| {
            let mut t = t.into_iter();
            let address = t.next().unwrap_or_default().trim().to_owned();
            if !address.is_empty() {
                done(Answer::Server {
                    address,
                    password: Password::new(t.next().unwrap_or_default()),
                });
            }
        },
    )
}

/// Asks for the password (both sides use the same one).
#[cfg(windows)]
pub(super) fn ask_password(password: &Password, done: impl Fn(Answer) + 'static) -> bool {
    use super::dialog_win::{ask, Field};
    let fields = [Field {
        label: "Password",
        text: password.expose(),
        secret: true,
    }];
    ask("EchoWarp: password", &fields, "Save", move |t| {
        done(Answer::Password(Password::new(
            t.into_iter().next().unwrap_or_default(),
        )))
    })
}

/// No dialog on this platform: returns false, and the caller opens the profile.
#[cfg(target_os = "macos")]
pub(super) fn ask_server(
    _servers: &[String],
    _address: &str,
    _password: &Password,
    _done: impl Fn(Answer) + 'static,
) -> bool {
    false
}

/// No dialog on this platform: returns false, and the caller opens the profile.
#[cfg(target_os = "macos")]
pub(super) fn ask_password(_password: &Password, _done: impl Fn(Answer) + 'static) -> bool {
    false
}

#[cfg(target_os = "linux")]
mod gtk_dialogs {
    use gtk::glib::Cast;
    use gtk::prelude::*;

    use super::Answer;
    use crate::protocol::Password;

    /// The connect dialog's title (tests/tray.rs finds its window by it).
    const SERVER_TITLE: &str = "EchoWarp: connect to a server";
    /// The password dialog's title.
    const PASSWORD_TITLE: &str = "EchoWarp: password";

    /// A dialog with Cancel and `accept` (the default), and a grid to lay its fields in.
    fn dialog(title: &str, accept: &str) -> (gtk::Dialog, gtk::Grid) {
        let d = gtk::Dialog::with_buttons(
            Some(title),
            None::<&gtk::Window>,
            gtk::DialogFlags::empty(),
            &[
                ("Cancel", gtk::ResponseType::Cancel),
                (accept, gtk::ResponseType::Accept),
            ],
        );
        d.set_default_response(gtk::ResponseType::Accept);
        d.set_position(gtk::WindowPosition::Center);
        d.set_keep_above(true);
        let grid = gtk::Grid::new();
        grid.set_row_spacing(8);
        grid.set_column_spacing(12);
        grid.set_border_width(12);
        d.content_area().add(&grid);
        (d, grid)
    }

    fn label(grid: &gtk::Grid, text: &str, row: i32) {
        let l = gtk::Label::new(Some(text));
        l.set_halign(gtk::Align::End);
        grid.attach(&l, 0, row, 1, 1);
    }

    /// A password field: what is typed shows as dots.
    fn password_entry(now: &Password) -> gtk::Entry {
        let e = gtk::Entry::new();
        e.set_visibility(false);
        e.set_input_purpose(gtk::InputPurpose::Password);
        e.set_text(now.expose());
        e.set_placeholder_text(Some("none"));
        e.set_activates_default(true);
        e.set_width_chars(28);
        e
    }

    /// Asks where to connect: the servers found on the network to pick from, or any address
    /// typed in; Return in the address moves to the password, Return there connects.
    pub(in crate::ui::tray) fn ask_server(
        servers: &[String],
        address: &str,
        password: &Password,
        done: impl Fn(Answer) + 'static,
    ) -> bool {
        let (d, grid) = dialog(SERVER_TITLE, "Connect");
        let combo = gtk::ComboBoxText::with_entry();
        for s in servers {
            combo.append_text(s);
        }
        let Some(entry) = combo.child().and_then(|c| c.downcast::<gtk::Entry>().ok()) else {
            return false;
        };
        entry.set_text(address);
        entry.set_placeholder_text(Some("a server's name, host name or IP address"));
        entry.set_width_chars(28);
        label(&grid, "Server", 0);
        grid.attach(&combo, 1, 0, 1, 1);
        let pw = password_entry(password);
        label(&grid, "Password", 1);
        grid.attach(&pw, 1, 1, 1, 1);
        let hint = gtk::Label::new(Some("The same password as the server's; never sent."));
        hint.set_halign(gtk::Align::Start);
        grid.attach(&hint, 1, 2, 1, 1);
        // Nothing to connect to until something is typed or picked.
        d.set_response_sensitive(gtk::ResponseType::Accept, !address.trim().is_empty());
        let dd = d.clone();
        entry.connect_changed(move |e| {
            dd.set_response_sensitive(gtk::ResponseType::Accept, !e.text().trim().is_empty());
        });
        let next = pw.clone();
        entry.connect_activate(move |_| next.grab_focus());
        let (typed, secret) = (entry.clone(), pw);
        d.connect_response(move |d, r| {
            let address = typed.text().trim().to_owned();
            if r == gtk::ResponseType::Accept && !address.is_empty() {
                done(Answer::Server {
                    address,
                    password: Password::new(secret.text().to_string()),
                });
            }
            d.close();
        });
        d.show_all();
        entry.grab_focus();
        d.present();
        true
    }

    /// Asks for the password (both sides use the same one).
    pub(in crate::ui::tray) fn ask_password(
        password: &Password,
        done: impl Fn(Answer) + 'static,
    ) -> bool {
        let (d, grid) = dialog(PASSWORD_TITLE, "Save");
        let pw = password_entry(password);
        label(&grid, "Password", 0);
        grid.attach(&pw, 1, 0, 1, 1);
        let hint = gtk::Label::new(Some(
            "Server and clients use the same one. Empty: none (local networks only).",
        ));
        hint.set_halign(gtk::Align::Start);
        grid.attach(&hint, 1, 1, 1, 1);
        let secret = pw.clone();
        d.connect_response(move |d, r| {
            if r == gtk::ResponseType::Accept {
                done(Answer::Password(Password::new(secret.text().to_string())));
            }
            d.close();
        });
        d.show_all();
        pw.grab_focus();
        d.present();
        true
    }
}
