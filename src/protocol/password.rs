//! The shared password as held in memory: wiped when dropped, never printed.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A shared password ("" for none). Its bytes are overwritten when it is dropped, and `Debug`
/// prints `[redacted]`, so a config or profile can be logged without it. It has no `Display`:
/// the text is reached only through [`Password::expose`].
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Password(String);

impl Password {
    /// Takes ownership of `text` (no copy is left behind).
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The password's text, for the key exchange and for writing the profile.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// No password.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Password {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Password {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s))
    }
}

impl serde::Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let p = Password::from("hunter2");
        assert_eq!(format!("{p:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(p.clone())), "Some([redacted])");
        assert_eq!(p.expose(), "hunter2");
    }

    #[test]
    fn zeroize_clears_the_text() {
        let mut p = Password::from("hunter2");
        p.zeroize();
        assert!(p.is_empty());
    }
}
