//! Atomic file replacement: write a temporary file beside the target, fsync, rename, fsync the
//! folder. A crash leaves either the old file or the new one, never half of one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::StoreError;

/// Replaces `path` with `contents`; `private` makes the file readable by its owner only (0600).
///
/// # Errors
/// [`StoreError::Io`] when the folder cannot be created or the file written.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    // Elsewhere the file takes the folder's permissions: on Windows, the per-user %APPDATA%
    // is its owner's alone.
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(StoreError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_sets_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/profile.toml");
        write_atomic(&p, b"one", true).expect("first write");
        write_atomic(&p, b"two", true).expect("second write");
        assert_eq!(fs::read(&p).expect("read back"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers = fs::read_dir(p.parent().expect("parent"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }
}
