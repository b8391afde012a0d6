//! Connecting storage: the backend `database.url` names, retry at start-up, migrations.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{Pool, Storage, breaker::Breaker, postgres::PgStore, sqlite};
use crate::{
    config::{DatabaseConfig, DatabaseUrl},
    metrics::StoreMetrics,
};

/// Connects to the configured database (retrying transient failures until
/// `startup_timeout`), applies migrations and returns the store, which records its waits and
/// commits in `metrics`.
pub async fn connect(cfg: &DatabaseConfig, metrics: StoreMetrics) -> anyhow::Result<Storage> {
    let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = match &cfg.url {
            DatabaseUrl::Sqlite(path) => connect_sqlite(cfg, path, &metrics).await,
            DatabaseUrl::Postgres(url) => connect_postgres(cfg, url, &metrics).await,
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

async fn connect_sqlite(
    cfg: &DatabaseConfig,
    path: &std::path::Path,
    metrics: &StoreMetrics,
) -> anyhow::Result<Storage> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating database directory {}", dir.display()))?;
    }
    // Opening and migrating is a few file operations: off the runtime, like any blocking call.
    let (cfg, path, metrics) = (cfg.clone(), path.to_owned(), metrics.clone());
    let store = tokio::task::spawn_blocking(move || sqlite::open(&cfg, &path, &metrics))
        .await
        .context("opening SQLite database")??;
    Ok(Storage {
        pool: Pool::Sqlite(store.read_pool()),
        items: Arc::new(store),
    })
}

/// A pooled PostgreSQL connection idle this long is pinged before a request gets it.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

async fn connect_postgres(
    cfg: &DatabaseConfig,
    url: &url::Url,
    metrics: &StoreMetrics,
) -> anyhow::Result<Storage> {
    let timeout_ms = cfg.statement_timeout.as_millis().to_string();
    let opts = PgConnectOptions::from_url(url)
        .context("database.url")?
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
        // sqlx pings every connection it hands out by default: one more round trip per
        // request. Ping only one that sat idle, as sqlx's documented example does; a busy
        // connection that broke fails its query, and the breaker takes it from there.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("applying PostgreSQL migrations")?;
    // Fail fast (503 at once) while PostgreSQL is unreachable, instead of every request waiting
    // out acquire_timeout; a background probe notices when it is back.
    Ok(Storage {
        items: Arc::new(Breaker::new(PgStore::new(
            pool.clone(),
            metrics.acquire_wait.clone(),
        ))),
        pool: Pool::Postgres(pool),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Backend, metrics::Metrics};

    #[test]
    fn only_reachability_problems_are_retried_at_start_up() {
        let refused = || sqlx::Error::Io(std::io::Error::other("connection refused"));
        assert!(is_transient(&anyhow::Error::new(refused())));
        assert!(is_transient(
            &anyhow::Error::new(sqlx::Error::PoolTimedOut).context("connecting to PostgreSQL")
        ));
        assert!(!is_transient(&anyhow::Error::new(sqlx::Error::RowNotFound)));
        assert!(!is_transient(&anyhow::anyhow!(
            "applying SQLite migrations"
        )));
    }

    #[tokio::test]
    async fn a_sqlite_database_is_created_with_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: DatabaseUrl::Sqlite(dir.path().join("new/dir/x.db")),
            ..DatabaseConfig::default()
        };
        let storage = connect(&cfg, Metrics::new().store()).await.unwrap();
        assert_eq!(storage.pool.backend(), Backend::Sqlite);
        assert_eq!(storage.pool.stats().max, cfg.max_connections);
        storage.items.ping().await.unwrap();
        storage.items.close().await;
        assert!(dir.path().join("new/dir/x.db").exists());
    }

    #[tokio::test]
    async fn an_unreachable_postgres_fails_after_the_start_up_timeout() {
        let cfg = DatabaseConfig {
            url: "postgres://nobody@127.0.0.1:1/none".parse().unwrap(),
            startup_timeout: Duration::from_millis(300),
            acquire_timeout: Duration::from_millis(100),
            ..DatabaseConfig::default()
        };
        let started = tokio::time::Instant::now();
        let e = connect(&cfg, Metrics::new().store()).await.err().unwrap();
        assert!(
            format!("{e:#}").contains("connecting to PostgreSQL"),
            "{e:#}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
