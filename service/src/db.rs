//! Database connection: picks the backend from the URL, connects with retry, runs migrations.

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{
    config::DatabaseConfig,
    items::store::{ItemStore, breaker::Breaker, postgres::PgStore, sqlite::SqliteStore},
};

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A URL we cannot use.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("must start with sqlite:// or postgres:// (got scheme {0:?})")]
    Scheme(String),
    #[error("is not a valid URL")]
    Invalid,
}

impl Backend {
    pub fn parse(url: &str) -> Result<Backend, UrlError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s)
            .ok_or(UrlError::Invalid)?;
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => {
                url::Url::parse(url).map_err(|_| UrlError::Invalid)?;
                Ok(Backend::Postgres)
            }
            other => Err(UrlError::Scheme(other.to_owned())),
        }
    }
}

/// The URL with any password replaced by `***`, for logs and `shipshape config`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            // Query parameters may carry a password too (`?password=`).
            redact_query(u.to_string())
        }
        Ok(u) => redact_query(u.to_string()),
        // Unparseable: do not risk echoing a secret.
        Err(_) if raw.starts_with("sqlite:") => raw.to_owned(),
        Err(_) => "[redacted]".to_owned(),
    }
}

fn redact_query(s: String) -> String {
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

/// Connects to the configured database (retrying transient failures until
/// `startup_timeout`), applies migrations and returns the store.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<Arc<dyn ItemStore>> {
    let url = cfg.url.expose();
    let backend = Backend::parse(url).context("database.url")?;
    let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = match backend {
            Backend::Sqlite => connect_sqlite(cfg).await,
            Backend::Postgres => connect_postgres(cfg).await,
        };
        match attempt {
            Ok(store) => return Ok(store),
            Err(err) if tokio::time::Instant::now() + delay < deadline && is_transient(&err) => {
                tracing::warn!(
                    error = %format!("{err:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "database not reachable yet, retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Errors worth retrying at start-up: the database is starting, restarting or not reachable yet.
fn is_transient(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => true,
            Some(sqlx::Error::Database(db)) => {
                // 57P03 cannot_connect_now (starting up), 53300 too_many_connections, 57P01 admin shutdown.
                matches!(db.code().as_deref(), Some("57P03" | "53300" | "57P01"))
            }
            _ => false,
        })
}

async fn connect_sqlite(cfg: &DatabaseConfig) -> anyhow::Result<Arc<dyn ItemStore>> {
    let opts = SqliteConnectOptions::from_str(cfg.url.expose())
        .context("parsing database.url")?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is fsynced before the 2xx goes out, so it survives a crash of the
        // process and of the machine.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(cfg.statement_timeout);
    if let Some(dir) = opts.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating database directory {}", dir.display()))?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(cfg.min_connections)
        .acquire_timeout(cfg.acquire_timeout)
        // An in-process SQLite connection cannot go stale, and sqlx's default ping before each
        // checkout is a round trip to the connection's worker thread: two context switches per
        // query for nothing.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .context("opening SQLite database")?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&pool)
        .await
        .context("applying SQLite migrations")?;
    Ok(Arc::new(SqliteStore::new(pool)))
}

async fn connect_postgres(cfg: &DatabaseConfig) -> anyhow::Result<Arc<dyn ItemStore>> {
    let timeout_ms = cfg.statement_timeout.as_millis().to_string();
    let opts = PgConnectOptions::from_str(cfg.url.expose())
        .context("parsing database.url")?
        .application_name("shipshape")
        .options([
            ("statement_timeout", timeout_ms.as_str()),
            ("idle_in_transaction_session_timeout", "30000"),
        ]);
    let pool = PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(cfg.min_connections)
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .connect_with(opts)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("applying PostgreSQL migrations")?;
    // Fail fast (503 at once) while PostgreSQL is unreachable, instead of every request waiting
    // out acquire_timeout; a background probe notices when it is back.
    Ok(Arc::new(Breaker::new(PgStore::new(pool))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            redact_url("postgres://db/app?user=a&password=s3cret"),
            "postgres://db/app?user=a&password=***"
        );
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
        assert!(!redact_url("postgres://a:b@[bad").contains('b'));
    }

    #[test]
    fn parses_backends() {
        assert_eq!(Backend::parse("sqlite://x.db").ok(), Some(Backend::Sqlite));
        assert_eq!(
            Backend::parse("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::parse("mysql://h/db").is_err());
        assert!(Backend::parse("nonsense").is_err());
    }
}
