//! SQLite backend: one file, WAL, `synchronous=FULL`; writes take the lock up front.

use async_trait::async_trait;
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use time::OffsetDateTime;
use uuid::Uuid;

use prometheus_client::metrics::histogram::Histogram;
use sqlx::{Sqlite, pool::PoolConnection};

use super::{CreateOutcome, Idempotency, ItemStore, ListQuery, StoreError, WriteOutcome, acquire};
use crate::items::model::{Item, NewItem, Price};

pub struct SqliteStore {
    pool: SqlitePool,
    acquire_wait: Histogram,
    /// SQLite has one writer at a time. Writers queue here, in order, instead of in SQLite's
    /// busy handler, which polls the lock with sleeps of 1, 2, 5, ... 100 ms: under concurrent
    /// writes that gave p99 latencies of seconds and burnt CPU on retries (docs/performance.md).
    writer: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    /// The store over `pool`, recording connection waits in `acquire_wait`.
    pub fn new(pool: SqlitePool, acquire_wait: Histogram) -> Self {
        Self {
            pool,
            acquire_wait,
            writer: tokio::sync::Mutex::new(()),
        }
    }

    async fn conn(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        acquire(&self.pool, &self.acquire_wait).await
    }

    /// Waits for the write turn at most as long as for a pooled connection (then 503).
    async fn write_turn(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, StoreError> {
        let limit = self.pool.options().get_acquire_timeout();
        tokio::time::timeout(limit, self.writer.lock())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))
    }
}

fn row_to_item(row: &SqliteRow) -> Result<Item, StoreError> {
    let tags: String = row.try_get("tags")?;
    Ok(Item {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: Price::from_cents(row.try_get("price_cents")?),
        quantity: row.try_get("quantity")?,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("tags: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

#[async_trait]
impl ItemStore for SqliteStore {
    #[tracing::instrument(level = "info", name = "INSERT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "INSERT", db.collection.name = "items"))]
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        let _turn = self.write_turn().await?;
        let mut conn = self.conn().await?;
        // IMMEDIATE takes the write lock now, so the key check and the inserts cannot interleave
        // with another writer (and never hit a lock-upgrade deadlock).
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        if let Some(idem) = idempotency {
            let seen = sqlx::query(
                "SELECT fingerprint, item_id, response FROM idempotency_keys WHERE key = ?1",
            )
            .bind(&idem.key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = seen {
                let fingerprint: String = row.try_get("fingerprint")?;
                tx.rollback().await?;
                if fingerprint != idem.fingerprint {
                    return Ok(CreateOutcome::KeyReused);
                }
                return Ok(CreateOutcome::Replayed {
                    item_id: row.try_get("item_id")?,
                    body: row.try_get("response")?,
                });
            }
        }
        sqlx::query(
            "INSERT INTO items (id, name, name_lower, description, price_cents, quantity, tags, created_at, updated_at, version) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(item.id)
        .bind(&item.name)
        .bind(item.name.to_lowercase())
        .bind(&item.description)
        .bind(item.price.cents())
        .bind(item.quantity)
        .bind(tags_json(&item.tags))
        .bind(item.created_at)
        .bind(item.updated_at)
        .bind(item.version)
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            let body =
                serde_json::to_string(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, item_id, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&idem.key)
            .bind(&idem.fingerprint)
            .bind(item.id)
            .bind(body)
            .bind(item.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CreateOutcome::Created(item.clone()))
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, description, price_cents, quantity, tags, created_at, updated_at, version FROM items WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.as_ref().map(row_to_item).transpose()
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn list(&self, q: &ListQuery) -> Result<Vec<Item>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, price_cents, quantity, tags, created_at, updated_at, version FROM items \
             WHERE id > ?1 \
               AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(items.tags) WHERE json_each.value = ?2)) \
               AND (?3 IS NULL OR instr(name_lower, ?3) > 0) \
             ORDER BY id LIMIT ?4",
        )
        .bind(q.after)
        .bind(&q.tag)
        .bind(&q.name_contains)
        .bind(i64::from(q.limit))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(row_to_item).collect()
    }

    #[tracing::instrument(level = "info", name = "UPDATE items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "UPDATE", db.collection.name = "items"))]
    async fn update(
        &self,
        id: Uuid,
        f: &NewItem,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError> {
        let _turn = self.write_turn().await?;
        let row = sqlx::query(
            "UPDATE items SET name = ?2, name_lower = ?3, description = ?4, price_cents = ?5, quantity = ?6, tags = ?7, \
                    updated_at = ?8, version = version + 1 \
             WHERE id = ?1 AND (?9 IS NULL OR version = ?9) \
             RETURNING id, name, description, price_cents, quantity, tags, created_at, updated_at, version",
        )
        .bind(id)
        .bind(&f.name)
        .bind(f.name.to_lowercase())
        .bind(&f.description)
        .bind(f.price.cents())
        .bind(f.quantity)
        .bind(tags_json(&f.tags))
        .bind(now)
        .bind(expected)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        match row {
            Some(row) => Ok(WriteOutcome::Done(row_to_item(&row)?)),
            None => self.missing_or_stale(id).await,
        }
    }

    #[tracing::instrument(level = "info", name = "DELETE items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "DELETE", db.collection.name = "items"))]
    async fn delete(
        &self,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<WriteOutcome<()>, StoreError> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("DELETE FROM items WHERE id = ?1 AND (?2 IS NULL OR version = ?2)")
            .bind(id)
            .bind(expected)
            .execute(&mut *self.conn().await?)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(WriteOutcome::Done(()));
        }
        self.missing_or_stale(id).await
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    #[tracing::instrument(level = "info", name = "DELETE idempotency_keys", skip_all, fields(otel.kind = "client", db.system.name = "sqlite", db.operation.name = "DELETE", db.collection.name = "idempotency_keys"))]
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
            .bind(before)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected())
    }
}

impl SqliteStore {
    /// After a conditional write matched no row: was the item gone, or at another version?
    async fn missing_or_stale<T>(&self, id: Uuid) -> Result<WriteOutcome<T>, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM items WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(if exists.is_some() {
            WriteOutcome::VersionMismatch
        } else {
            WriteOutcome::NotFound
        })
    }
}
