//! Atomic file replacement: write a temporary file beside the target, fsync, rename, fsync the
//! folder. A crash leaves either the old file or the new one, never half of one.

use std::fs;
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
    // A fresh random name, created exclusively (O_CREAT|O_EXCL: a file or symbolic link planted
    // at that name makes the open fail rather than be followed), removed again on any failure.
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(if private {
            0o600
        } else {
            0o644
        }));
    }
    // Elsewhere the file takes the folder's permissions: on Windows, the per-user %APPDATA%
    // is its owner's alone.
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut f = builder.tempfile_in(dir)?;
        f.write_all(contents)?;
        f.as_file().sync_all()?;
        f.persist(path).map_err(|e| e.error)?;
        #[cfg(unix)]
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
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

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_in_the_way_is_replaced_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep me").expect("victim");
        let p = dir.path().join("profile.toml");
        std::os::unix::fs::symlink(&victim, &p).expect("symlink");
        write_atomic(&p, b"new", true).expect("write");
        assert_eq!(fs::read(&victim).expect("victim"), b"keep me");
        assert!(fs::symlink_metadata(&p).expect("meta").is_file());
        assert_eq!(fs::read(&p).expect("read"), b"new");
    }
}
