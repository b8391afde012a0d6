//! `database.url`, parsed once: a SQLite file path or a PostgreSQL URL, and its redacted form.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Secret;

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`, as metrics and logs name the backend.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A parsed `database.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: the database file (relative paths are relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://user:pass@host:port/db?...`; the URL may carry a password.
    Postgres(Box<url::Url>),
}

impl DatabaseUrl {
    /// Parses `raw`; the error says what is wrong without repeating the value (it may hold a
    /// password).
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        let scheme = raw
            .split_once(':')
            .map(|(s, _)| s)
            .ok_or("is not a valid URL (expected sqlite://PATH or postgres://...)")?;
        match scheme {
            "sqlite" => {
                let rest = raw["sqlite:".len()..]
                    .strip_prefix("//")
                    .unwrap_or(&raw["sqlite:".len()..]);
                if rest.contains('?') {
                    return Err(
                        "sqlite:// URLs take no query parameters (the service sets the \
                                journal mode, synchronous and busy timeout itself)"
                            .into(),
                    );
                }
                if rest.is_empty() || rest == ":memory:" {
                    return Err(
                        "needs a database file path, e.g. sqlite://./data/shipshape.db \
                                (an in-memory database would lose every write)"
                            .into(),
                    );
                }
                Ok(DatabaseUrl::Sqlite(PathBuf::from(rest)))
            }
            "postgres" | "postgresql" => match url::Url::parse(raw) {
                Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
                    Ok(DatabaseUrl::Postgres(Box::new(url)))
                }
                Ok(_) => Err("a postgres:// URL needs a host".into()),
                Err(e) => Err(format!("is not a valid URL ({e})")),
            },
            other => Err(format!(
                "must start with sqlite:// or postgres:// (got scheme {other:?})"
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL as configured, password included: only for serialising into figment's defaults.
    fn expose(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.to_string(),
        }
    }

    /// The URL with any password replaced by `***`, for logs and `shipshape config`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(_) => self.expose(),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

/// `url` with its password (in the userinfo or a `password=` query parameter) as `***`.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let s = u.to_string();
    match s.split_once('?') {
        Some((base, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
        None => s,
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DatabaseUrl::parse(s)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As with `Secret`: figment layers defaults by serialising, so the value passes through.
        s.serialize_str(&self.expose())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Secret::deserialize(d)?;
        DatabaseUrl::parse(raw.expose()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> DatabaseUrl {
        DatabaseUrl::parse(s).unwrap()
    }

    #[test]
    fn parses_both_backends() {
        assert_eq!(
            url("sqlite://./data/x.db"),
            DatabaseUrl::Sqlite("./data/x.db".into())
        );
        assert_eq!(
            url("sqlite:///data/x.db"),
            DatabaseUrl::Sqlite("/data/x.db".into())
        );
        assert_eq!(url("sqlite:x.db").backend(), Backend::Sqlite);
        assert_eq!(url("postgresql://h/db").backend(), Backend::Postgres);
        assert_eq!(url("postgres://u:p@h:5432/db").backend(), Backend::Postgres);
        for (bad, why) in [
            ("mysql://h/db", "must start with sqlite:// or postgres://"),
            ("nonsense", "is not a valid URL"),
            ("sqlite://", "needs a database file path"),
            ("sqlite::memory:", "needs a database file path"),
            ("sqlite://x.db?mode=ro", "take no query parameters"),
            ("postgres://", "needs a host"),
            ("postgres://u:p@[bad/db", "is not a valid URL"),
        ] {
            let e = DatabaseUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            url("postgres://app:s3cret@db:5432/app").redacted(),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            url("postgres://db/app?user=a&password=s3cret").redacted(),
            "postgres://db/app?user=a&password=***"
        );
        assert_eq!(
            url("sqlite://./data/x.db").redacted(),
            "sqlite://./data/x.db"
        );
        let shown = format!("{:?}", url("postgres://app:s3cret@db/app"));
        assert!(!shown.contains("s3cret"), "{shown}");
        let e = DatabaseUrl::parse("postgres://app:s3cret@[bad/db").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
