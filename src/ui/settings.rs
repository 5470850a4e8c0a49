//! What a front end runs with: a profile file (or the saved one, or the defaults) and the
//! changes asked for this run. The command line makes one from its flags; the tray keeps one to
//! read the profile again whenever the file changes.

use std::path::PathBuf;

use crate::engine::{Config, ConfigError, Extras};
use crate::store::paths;
use crate::store::profile::{Overrides, Profile};
use crate::store::StoreError;

/// A front end's settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The profile to read; `None`: the saved one, if any, else the defaults.
    pub profile_file: Option<PathBuf>,
    /// Changes to the profile for this run.
    pub overrides: Overrides,
    /// What no profile key holds.
    pub extras: Extras,
}

impl Settings {
    /// The file read, watched and written back to.
    ///
    /// # Errors
    /// [`StoreError::NoHome`] when there is no config folder for the saved profile.
    pub fn profile_path(&self) -> Result<PathBuf, StoreError> {
        match &self.profile_file {
            Some(p) => Ok(p.clone()),
            None => paths::profile_path(),
        }
    }

    /// The effective profile: the file, then the changes, checked.
    ///
    /// # Errors
    /// [`ConfigError::Store`] when the file cannot be read or parsed (naming its line and key);
    /// [`ConfigError::Invalid`] when a change makes a value invalid.
    pub fn profile(&self) -> Result<Profile, ConfigError> {
        let mut p = match &self.profile_file {
            Some(path) => Profile::load(path)?,
            None => Profile::load_if_exists(&paths::profile_path()?)?.unwrap_or_default(),
        };
        self.overrides.apply(&mut p);
        p.validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        Ok(p)
    }

    /// What the engine runs for profile `p`.
    ///
    /// # Errors
    /// As [`Config::from_profile`].
    pub fn config(&self, p: &Profile) -> Result<Config, ConfigError> {
        Config::from_profile(p, self.extras)
    }
}
