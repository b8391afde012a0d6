//! SQLite backend: one file in WAL mode with `synchronous=FULL`. Reads run on the calling
//! thread over pooled read connections; writes are group-committed by one writer thread.
//!
//! sqlx's SQLite driver ran every query on a worker thread of its connection and sent the
//! result back: two thread hand-offs per query, the top kernel cost of a GET
//! (docs/performance.md). Point reads and list pages are microseconds of SQLite work, so
//! they run where the request runs. A filtered list can scan the table, so it runs on the
//! blocking pool instead of stalling a runtime worker.

mod schema;
mod sql;
mod writer;

use std::{path::Path, time::Instant};

use async_trait::async_trait;
use deadpool::managed::{self, Metrics as ObjectMetrics, Object, QueueMode, RecycleResult};
use prometheus_client::metrics::histogram::Histogram;
use time::OffsetDateTime;
use uuid::Uuid;

use self::writer::{GroupLimits, Writer};
use super::{CreateOutcome, Idempotency, ItemStore, ListQuery, StoreError, WriteOutcome};
use crate::{
    config::DatabaseConfig,
    items::model::{Item, NewItem},
    metrics::{PoolStats, StoreMetrics},
};

/// Read connections: opened on demand up to the bound, reused most-recent first (so a light
/// load keeps one or two warm connections and their page caches).
pub type ReadPool = managed::Pool<Readers>;

/// Opens read connections for [`ReadPool`].
pub struct Readers {
    path: std::path::PathBuf,
    busy_timeout: std::time::Duration,
}

impl managed::Manager for Readers {
    type Type = rusqlite::Connection;
    type Error = rusqlite::Error;

    async fn create(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        // Opening is a file open and a few pragmas: rare and short, so it runs in place too.
        schema::open_reader(&self.path, self.busy_timeout)
    }

    async fn recycle(
        &self,
        _conn: &mut rusqlite::Connection,
        _: &ObjectMetrics,
    ) -> RecycleResult<rusqlite::Error> {
        // An in-process connection cannot go stale.
        Ok(())
    }
}

pub struct SqliteStore {
    readers: ReadPool,
    writer: Writer,
    acquire_wait: Histogram,
}

/// Opens (creating if missing) and migrates the database at `path`, and starts its writer.
pub fn open(
    cfg: &DatabaseConfig,
    path: &Path,
    metrics: &StoreMetrics,
) -> anyhow::Result<SqliteStore> {
    let conn = schema::open_writer(path, cfg.statement_timeout)?;
    let limits = GroupLimits {
        max_size: cfg.commit_group_max as usize,
        max_wait: cfg.commit_group_wait,
    };
    let writer = Writer::start(conn, limits, cfg.acquire_timeout, metrics)?;
    // The writer holds one connection of `max_connections`; reads get the rest (at least one).
    let readers = managed::Pool::builder(Readers {
        path: path.to_owned(),
        busy_timeout: cfg.statement_timeout,
    })
    .max_size(cfg.max_connections.saturating_sub(1).max(1) as usize)
    .queue_mode(QueueMode::Lifo)
    .wait_timeout(Some(cfg.acquire_timeout))
    .runtime(deadpool::Runtime::Tokio1)
    .build()?;
    Ok(SqliteStore {
        readers,
        writer,
        acquire_wait: metrics.acquire_wait.clone(),
    })
}

impl SqliteStore {
    /// The read pool, for [`super::Pool`]'s figures.
    pub fn read_pool(&self) -> ReadPool {
        self.readers.clone()
    }

    async fn reader(&self) -> Result<Object<Readers>, StoreError> {
        // Most reads find an idle connection at once; only a wait is worth a clock read.
        let status = self.readers.status();
        let start = (status.available == 0).then(Instant::now);
        let conn = self.readers.get().await;
        if let Some(start) = start {
            self.acquire_wait.observe(start.elapsed().as_secs_f64());
        }
        conn.map_err(|e| match e {
            managed::PoolError::Backend(e) => StoreError::Sqlite(e),
            managed::PoolError::Timeout(_) => StoreError::Busy,
            _ => StoreError::Closed,
        })
    }
}

/// The read pool's figures, counting the writer's connection as always in use.
pub fn stats(readers: &ReadPool) -> PoolStats {
    let s = readers.status();
    PoolStats {
        size: s.size as u32 + 1,
        idle: s.available as u32,
        max: s.max_size as u32 + 1,
    }
}

#[async_trait]
impl ItemStore for SqliteStore {
    #[tracing::instrument(level = "info", name = "INSERT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "INSERT", db.collection.name = "items"))]
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        let (item, idempotency) = (item.clone(), idempotency.cloned());
        self.writer
            .write(move |conn| sql::create(conn, &item, idempotency.as_ref()))
            .await
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        sql::get(&*self.reader().await?, id)
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn list(&self, q: &ListQuery) -> Result<Vec<Item>, StoreError> {
        let conn = self.reader().await?;
        if q.tag.is_none() && q.name_contains.is_none() {
            // An index range of `limit` rows.
            return sql::list(&conn, q);
        }
        let q = q.clone();
        tokio::task::spawn_blocking(move || sql::list(&conn, &q))
            .await
            .map_err(|_| StoreError::Panicked)?
    }

    #[tracing::instrument(level = "info", name = "UPDATE items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "UPDATE", db.collection.name = "items"))]
    async fn update(
        &self,
        id: Uuid,
        fields: &NewItem,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError> {
        let fields = fields.clone();
        self.writer
            .write(move |conn| sql::update(conn, id, &fields, expected, now))
            .await
    }

    #[tracing::instrument(level = "info", name = "DELETE items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "DELETE", db.collection.name = "items"))]
    async fn delete(
        &self,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<WriteOutcome<()>, StoreError> {
        self.writer
            .write(move |conn| sql::delete(conn, id, expected))
            .await
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(StoreError::Closed);
        }
        let conn = self.reader().await?;
        conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close();
    }

    #[tracing::instrument(level = "info", name = "DELETE idempotency_keys", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "DELETE", db.collection.name = "idempotency_keys"))]
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| sql::purge_idempotency_keys(conn, before))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        config::DatabaseUrl,
        items::{model::Price, store::now_micros},
        metrics::Metrics,
    };

    /// A store that gathers writes for 50 ms, so that writes started together share a group.
    fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let cfg = DatabaseConfig {
            url: DatabaseUrl::Sqlite(path.clone()),
            commit_group_wait: Duration::from_millis(50),
            ..DatabaseConfig::default()
        };
        let store = open(&cfg, &path, &Metrics::new().store()).unwrap();
        (dir, Arc::new(store))
    }

    fn fields(name: &str) -> NewItem {
        NewItem {
            name: name.into(),
            description: None,
            price: Price::from_cents(100),
            quantity: 1,
            tags: vec!["t".into()],
        }
    }

    fn item(name: &str) -> Item {
        let now = now_micros();
        let f = fields(name);
        Item {
            id: Uuid::now_v7(),
            name: f.name,
            description: f.description,
            price: f.price,
            quantity: f.quantity,
            tags: f.tags,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    fn key(fingerprint: &str) -> Idempotency {
        Idempotency {
            key: "k-1".into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[tokio::test]
    async fn the_same_key_twice_in_one_group_creates_once_and_replays() {
        let (_dir, s) = store();
        let (a, b, c) = (item("a"), item("b"), item("c"));
        let (k1, k2) = (key("f1"), key("f2"));
        let (first, again, other) = tokio::join!(
            s.create(&a, Some(&k1)),
            s.create(&b, Some(&k1)),
            s.create(&c, Some(&k2)),
        );
        assert!(matches!(first.unwrap(), CreateOutcome::Created(i) if i.id == a.id));
        match again.unwrap() {
            CreateOutcome::Replayed { item_id, body } => {
                assert_eq!(item_id, a.id);
                assert_eq!(body, serde_json::to_string(&a).unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(other.unwrap(), CreateOutcome::KeyReused));
        assert!(
            s.get(b.id).await.unwrap().is_none(),
            "the replay stored nothing"
        );
    }

    #[tokio::test]
    async fn conditional_writes_in_one_group_see_each_other() {
        let (_dir, s) = store();
        let a = item("a");
        s.create(&a, None).await.unwrap();
        let now = now_micros();
        // Two updates that both expect version 1, then a delete at version 2, one group.
        let (f2, f3, f4) = (fields("a2"), fields("a3"), fields("a4"));
        let (first, stale, deleted, gone) = tokio::join!(
            s.update(a.id, &f2, Some(1), now),
            s.update(a.id, &f3, Some(1), now),
            s.delete(a.id, Some(2)),
            s.update(a.id, &f4, None, now),
        );
        match first.unwrap() {
            WriteOutcome::Done(item) => assert_eq!((item.version, item.name.as_str()), (2, "a2")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(stale.unwrap(), WriteOutcome::VersionMismatch));
        assert!(matches!(deleted.unwrap(), WriteOutcome::Done(())));
        assert!(matches!(gone.unwrap(), WriteOutcome::NotFound));
        assert!(s.get(a.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn reads_see_acknowledged_writes_and_filters_run_off_the_runtime() {
        let (_dir, s) = store();
        let a = item("Alpha");
        s.create(&a, None).await.unwrap();
        assert_eq!(s.get(a.id).await.unwrap().unwrap().name, "Alpha");
        let page = |tag: Option<&str>, q: Option<&str>| ListQuery {
            after: Uuid::nil(),
            limit: 20,
            tag: tag.map(Into::into),
            name_contains: q.map(Into::into),
        };
        assert_eq!(s.list(&page(None, None)).await.unwrap().len(), 1);
        assert_eq!(
            s.list(&page(Some("t"), Some("alp"))).await.unwrap().len(),
            1
        );
        assert!(s.list(&page(Some("x"), None)).await.unwrap().is_empty());
        s.ping().await.unwrap();
        let st = stats(&s.read_pool());
        assert_eq!(st.max, DatabaseConfig::default().max_connections);
        assert!(st.size >= 2 && st.idle >= 1, "{st:?}");
        s.close().await;
        assert!(matches!(s.ping().await, Err(StoreError::Closed)));
        let late = item("late");
        assert!(matches!(
            s.create(&late, None).await,
            Err(StoreError::Closed)
        ));
    }
}
