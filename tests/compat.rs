//! Wire compatibility with an earlier build: today's binary against the release binary of the
//! last commit before the session redesign (scripts/build-previous.sh), both ways, in each
//! security mode, and a wrong password both ways.
//!
//! Needs: git and cargo, to build that commit once (`ECHOWARP_PREVIOUS_BIN` names a build made
//! already, as scripts/test.sh does); loopback sockets.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The earlier build, made once per test run when the test command has not made it.
fn previous() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("ECHOWARP_PREVIOUS_BIN") {
            return PathBuf::from(bin);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-previous.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run scripts/build-previous.sh");
        assert!(
            out.status.success(),
            "building the earlier commit failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A WAV from a server run by `server` to a client run by `client`, with `mode` flags on the
/// server: it must arrive sample-exact.
fn stream(server: &Sandbox, client: &Sandbox, mode: &[&str]) {
    let (want, got, _) = wav_between(server, client, mode, 1.0);
    assert_sample_exact(&want, &got);
}

const MODES: [&[&str]; 3] = [&[], &["--no-encryption", "-i"], &["--no-encryption"]];

#[test]
fn todays_client_plays_an_earlier_server_in_every_mode() {
    let (old, new) = (Sandbox::of(previous()), Sandbox::new());
    for mode in MODES {
        stream(&old, &new, mode);
    }
}

#[test]
fn an_earlier_client_plays_todays_server_in_every_mode() {
    let (old, new) = (Sandbox::of(previous()), Sandbox::new());
    for mode in MODES {
        stream(&new, &old, mode);
    }
}

#[test]
fn a_wrong_password_is_401_between_the_builds_both_ways() {
    let (old, new) = (Sandbox::of(previous()), Sandbox::new());
    for (server, client) in [(&old, &new), (&new, &old)] {
        let port = free_port().to_string();
        let mut s = server.spawn(&["-d", "null", "-u", &port, "-p", "right", "-r", "0"]);
        s.wait_for("listening on", SECS(10));
        let (code, _, err) = client.run(
            &[
                "-c",
                "-a",
                "127.0.0.1",
                "-u",
                &port,
                "-p",
                "wrong",
                "-r",
                "1",
                "-d",
                "null",
            ],
            SECS(20),
        );
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("401"), "{err}");
    }
}
