//! Storage interface for items (`ItemStore`) with its SQLite and PostgreSQL backends, and the
//! connection that picks one (`connect`).

pub mod breaker;
mod connect;
pub mod postgres;
pub mod sqlite;

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use prometheus_client::metrics::histogram::Histogram;
use time::OffsetDateTime;
use uuid::Uuid;

pub use connect::connect;

use super::model::{Item, NewItem};
use crate::{config::Backend, metrics::PoolStats};

/// A POST's idempotency record: the key, a fingerprint of the request, the response to replay.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the normalised request body.
    pub fingerprint: String,
}

/// What `create` did.
#[derive(Debug)]
pub enum CreateOutcome {
    Created(Item),
    /// The key was seen before with the same request: the original response body.
    Replayed {
        item_id: Uuid,
        body: String,
    },
    /// The key was seen before with a different request.
    KeyReused,
}

/// What a conditional update or delete did.
#[derive(Debug)]
pub enum WriteOutcome<T> {
    Done(T),
    NotFound,
    /// The item exists but its version is not the expected one.
    VersionMismatch,
}

/// A page request: items with `id > after`, optionally filtered, in id order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub after: Uuid,
    pub limit: u32,
    pub tag: Option<String>,
    /// Lower-cased name substring.
    pub name_contains: Option<String>,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// Waited `database.acquire_timeout` for a connection or for room in the write queue.
    #[error("the database is busy (no connection or write slot within the acquire timeout)")]
    Busy,
    /// The store is shut down.
    #[error("the database is closed")]
    Closed,
    /// A database operation panicked; it was rolled back alone.
    #[error("a database operation panicked")]
    Panicked,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Failed fast: the database was unreachable moments ago and has not answered a probe since.
    #[error("the database is unreachable (failing fast until it answers again)")]
    Unreachable,
}

impl StoreError {
    /// True when the database is unreachable, overloaded or timed out (503, retry), as opposed to
    /// a bug or corrupt data (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_code(&c)),
                _ => false,
            },
            // SQLITE_BUSY, SQLITE_LOCKED: another process holds the lock past the busy timeout.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::Sqlite(_) | StoreError::Corrupt(_) | StoreError::Panicked => false,
            StoreError::Unreachable | StoreError::Busy | StoreError::Closed => true,
        }
    }
}

/// PostgreSQL SQLSTATEs that mean "busy or unreachable, retry", not "your request is wrong":
/// 57014 query_canceled (statement_timeout), class 08 connection exceptions, 57P0x shutting
/// down / cannot connect now, class 53 insufficient resources.
fn unavailable_code(code: &str) -> bool {
    code.len() == 5
        && (code == "57014"
            || code.starts_with("08")
            || code.starts_with("57P")
            || code.starts_with("53"))
}

/// Everything the API needs from storage. Both backends pass the same test suite.
#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// Inserts `item`; with `idempotency`, atomically records the key or replays the original.
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError>;
    /// Up to `limit` items after the cursor, in id order.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Item>, StoreError>;
    /// Replaces the fields of `id`, bumping its version, if its version is `expected` (or any).
    async fn update(
        &self,
        id: Uuid,
        fields: &NewItem,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError>;
    async fn delete(&self, id: Uuid, expected: Option<i64>)
    -> Result<WriteOutcome<()>, StoreError>;
    /// A round trip to the database (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the pool, waiting for connections to be returned.
    async fn close(&self);
    /// Forgets idempotency keys recorded before `before`; returns how many.
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The store the request path uses.
pub type SharedStore = Arc<dyn ItemStore>;

/// A connected database: the store requests use, and the pool behind it for metrics.
#[derive(Clone)]
pub struct Storage {
    pub items: SharedStore,
    pub pool: Pool,
}

/// The connection pool of a [`Storage`], read for metrics and logs (not by requests).
#[derive(Clone)]
pub enum Pool {
    Sqlite(sqlite::ReadPool),
    Postgres(sqlx::PgPool),
}

impl Pool {
    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Pool size, idle and configured maximum connections, taken now.
    pub fn stats(&self) -> PoolStats {
        match self {
            Pool::Sqlite(p) => sqlite::stats(p),
            Pool::Postgres(p) => stats(p),
        }
    }
}

fn stats<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
    PoolStats {
        size: pool.size(),
        idle: pool.num_idle() as u32,
        max: pool.options().get_max_connections(),
    }
}

/// Timestamps are stored with microsecond precision on both backends.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

/// Acquires a pooled connection, recording the wait in `histogram`.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    histogram: &Histogram,
) -> Result<sqlx::pool::PoolConnection<DB>, StoreError> {
    let start = Instant::now();
    let conn = pool.acquire().await;
    histogram.observe(start.elapsed().as_secs_f64());
    Ok(conn?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_means_retry_later_and_the_rest_is_a_bug() {
        let io = StoreError::Database(sqlx::Error::Io(std::io::Error::other("refused")));
        assert!(io.is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_unavailable());
        assert!(StoreError::Unreachable.is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::Corrupt("tags".into()).is_unavailable());
    }

    #[test]
    fn database_codes_that_mean_busy_or_unreachable() {
        // PostgreSQL SQLSTATEs.
        for code in ["57014", "08006", "08001", "57P01", "57P03", "53300"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22001"] {
            assert!(!unavailable_code(code), "{code}");
        }
        for code in ["5", "6", "261", "x"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn sqlite_busy_and_locked_mean_retry_later() {
        use rusqlite::ffi;
        let failure =
            |code| StoreError::Sqlite(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        assert!(failure(ffi::SQLITE_BUSY).is_unavailable());
        assert!(failure(ffi::SQLITE_LOCKED).is_unavailable());
        assert!(failure(ffi::SQLITE_BUSY_SNAPSHOT).is_unavailable());
        assert!(!failure(ffi::SQLITE_CONSTRAINT).is_unavailable());
        assert!(!failure(ffi::SQLITE_FULL).is_unavailable());
        assert!(StoreError::Busy.is_unavailable() && StoreError::Closed.is_unavailable());
        assert!(!StoreError::Panicked.is_unavailable());
    }

    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(now_micros().nanosecond() % 1000, 0);
    }
}
