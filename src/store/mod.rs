//! What EchoWarp keeps on disk: the profile, the ban list, logs (DESIGN.md §3.2).

pub mod atomic;
pub mod bans;
pub mod paths;
pub mod profile;

use std::path::PathBuf;

/// Errors reading or writing EchoWarp's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A profile does not parse or holds a bad value; names the line and the key.
    #[error("{path}: line {line}{key}: {message}", key = key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    Profile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key at fault, where known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No home or config folder could be found for this user.
    #[error("no config folder for this user (is HOME set?)")]
    NoHome,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
