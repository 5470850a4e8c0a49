//! The Windows binary under Wine (issue 16): each test gets its own throw-away Wine prefix, so
//! its `%APPDATA%` (profile, ban list) and registry are its own, cloned from a template prefix
//! that this test process makes once.
//!
//! Needs `ECHOWARP_WINDOWS_EXE` (the cross-built `echowarp.exe`; scripts/test.sh builds it and
//! sets it), Wine and mingw-w64 (for the test-only `ProcessPrng` shim, tests/wine/processprng.c).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{Proc, SECS};

/// The exe under test.
pub fn exe() -> PathBuf {
    let path = std::env::var_os("ECHOWARP_WINDOWS_EXE")
        .map(PathBuf::from)
        .expect(
            "ECHOWARP_WINDOWS_EXE must name the cross-built echowarp.exe: run scripts/test.sh, or \
         cargo build --release --target x86_64-pc-windows-gnu and set it",
        );
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// A Linux path as the exe sees it (Wine maps `/` to drive `Z:`).
pub fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn run_quietly(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The template prefix and the folder holding the exe with the shim beside it, made once per
/// test process (afresh each run) under cargo's temporary folder for tests.
fn template() -> &'static (PathBuf, PathBuf) {
    static TEMPLATE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wine");
        let _ = std::fs::remove_dir_all(&root);
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::copy(exe(), bin.join("echowarp.exe")).expect("copy the exe");
        let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/processprng.c");
        run_quietly(
            Command::new("x86_64-w64-mingw32-gcc")
                .args(["-shared", "-O2", "-o"])
                .arg(bin.join("bcryptprimitives.dll"))
                .arg(&shim)
                .arg("-ladvapi32"),
            "building the ProcessPrng shim",
        );
        let prefix = root.join("prefix");
        run_quietly(
            Command::new("wineboot")
                .arg("--init")
                .env("WINEPREFIX", &prefix)
                .env("WINEDEBUG", "-all")
                .env_remove("DISPLAY")
                .stdin(Stdio::null()),
            "making the template Wine prefix",
        );
        run_quietly(
            Command::new("wineserver")
                .args(["-w"])
                .env("WINEPREFIX", &prefix),
            "waiting for wineserver",
        );
        (prefix, bin)
    })
}

/// One test's Windows: a prefix of its own and the exe.
pub struct Wine {
    pub dir: tempfile::TempDir,
    pub prefix: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Wine {
    pub fn new() -> Self {
        let (template, bin) = template();
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().join("prefix");
        // Hard links for the 700 MB of DLLs Wine never writes; real copies of the registry
        // files, which it rewrites.
        run_quietly(
            Command::new("cp").arg("-al").arg(template).arg(&prefix),
            "cloning the Wine prefix",
        );
        for entry in std::fs::read_dir(template).expect("template") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                let to = prefix.join(entry.file_name());
                std::fs::remove_file(&to).expect("unlink");
                std::fs::copy(entry.path(), &to).expect("copy");
            }
        }
        Self {
            dir,
            prefix,
            bin: bin.clone(),
            env: Vec::new(),
        }
    }

    /// Adds variables to every process of this prefix (a PipeWire session's, say).
    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `%APPDATA%` (the roaming application data folder) inside this prefix.
    pub fn appdata(&self) -> PathBuf {
        let users = self.prefix.join("drive_c/users");
        std::fs::read_dir(&users)
            .expect("users")
            .filter_map(Result::ok)
            .map(|e| e.path().join("AppData/Roaming"))
            .find(|p| p.is_dir())
            .expect("no AppData/Roaming in the prefix")
    }

    /// A Wine command of this prefix (`program` is `wine`, `reg`, `msiexec` ...).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The folder holding the exe and the test-only shim.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// `wine echowarp.exe args...`
    pub fn echowarp(&self, args: &[&str]) -> Command {
        let mut c = self.cmd("wine");
        c.arg(self.bin.join("echowarp.exe")).args(args);
        c
    }

    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.echowarp(args), args)
    }

    /// Runs to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut p = self.spawn(args);
        let status = p.wait_timeout(SECS(60));
        (status.code().unwrap_or(-1), p.stdout(), p.stderr())
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = self
            .cmd("wineserver")
            .arg("-k")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
