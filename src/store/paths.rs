//! Where files live: `directories::ProjectDirs::from("", "", "echowarp")`, so XDG variables apply.

use std::path::PathBuf;

use super::StoreError;

/// The profile's file name.
pub const PROFILE_FILE: &str = "profile.toml";
/// The ban list's file name (as in EchoWarp 0.4).
pub const BAN_LIST_FILE: &str = "echowarp_ban_list.txt";

fn dirs() -> Result<directories::ProjectDirs, StoreError> {
    directories::ProjectDirs::from("", "", "echowarp").ok_or(StoreError::NoHome)
}

/// `<config_dir>/profile.toml`.
///
/// # Errors
/// [`StoreError::NoHome`] without a home folder.
pub fn profile_path() -> Result<PathBuf, StoreError> {
    Ok(dirs()?.config_dir().join(PROFILE_FILE))
}

/// `<data_dir>/echowarp_ban_list.txt`.
///
/// # Errors
/// [`StoreError::NoHome`] without a home folder.
pub fn ban_list_path() -> Result<PathBuf, StoreError> {
    Ok(dirs()?.data_dir().join(BAN_LIST_FILE))
}

/// `<data_dir>/logs`.
///
/// # Errors
/// [`StoreError::NoHome`] without a home folder.
pub fn log_dir() -> Result<PathBuf, StoreError> {
    Ok(dirs()?.data_dir().join("logs"))
}
