//! `Secret`: a configured value that is never shown (redacted in `Debug`, `Display`, output).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value: redacted in `Debug` and `Display`.
///
/// In config it is either the value itself or `file:/path`, in which case the value is read
/// from that file (trailing newline removed), as Kubernetes Secret volumes provide it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites are the few places that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads `raw` as a value or a `file:/path` reference.
    pub fn resolve(raw: String) -> Result<Secret, String> {
        match raw.strip_prefix("file:") {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| Secret(text.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| format!("cannot read secret file {path}: {e}")),
            None => Ok(Secret(raw)),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Serialising is how figment layers defaults, so the real value must pass through;
        // human output goes through `Config::redacted_toml` instead.
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Secret::resolve(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret([redacted]) [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reads_file_references_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "from-a-file\r\n").unwrap();
        let s = Secret::resolve(format!("file:{}", path.display())).unwrap();
        assert_eq!(s.expose(), "from-a-file");
        let missing = Secret::resolve("file:/nonexistent/secret".into()).unwrap_err();
        assert!(
            missing.starts_with("cannot read secret file /nonexistent/secret: "),
            "{missing}"
        );
        assert_eq!(Secret::resolve("plain".into()).unwrap().expose(), "plain");
    }
}
