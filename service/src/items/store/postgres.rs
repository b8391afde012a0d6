//! PostgreSQL backend: for replicated deployments; the key check relies on the primary key.

use async_trait::async_trait;
use sqlx::{PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use prometheus_client::metrics::histogram::Histogram;
use sqlx::{Postgres, pool::PoolConnection};

use super::{CreateOutcome, Idempotency, ItemStore, ListQuery, StoreError, WriteOutcome, acquire};
use crate::items::model::{Item, NewItem, Price};

pub struct PgStore {
    pool: PgPool,
    acquire_wait: Histogram,
}

impl PgStore {
    /// The store over `pool`, recording connection waits in `acquire_wait`.
    pub fn new(pool: PgPool, acquire_wait: Histogram) -> Self {
        Self { pool, acquire_wait }
    }

    /// A pooled connection. sqlx's acquire future is ~4 KB (clippy's `large_futures`): boxed
    /// here, every store future that awaits it stays small, where each move of those futures
    /// (into async-trait's box, into the breaker's) copied it whole, ~30k instructions of
    /// `memcpy` per GET (docs/performance.md#where-the-targets-are-missed-and-why).
    async fn conn(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Box::pin(acquire(&self.pool, &self.acquire_wait)).await
    }
}

fn row_to_item(row: &PgRow) -> Result<Item, StoreError> {
    Ok(Item {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: Price::from_cents(row.try_get("price_cents")?),
        quantity: row.try_get("quantity")?,
        tags: row.try_get("tags")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

/// The create in one statement and one round trip (autocommit, so no BEGIN or COMMIT):
/// claim the key (if any), insert the item only if the key was claimed or there is none, and
/// read back what the key held before this statement. Every CTE sees the same snapshot, so
/// `prior` is the key's row as committed before us, never the row `claimed` just wrote.
const CREATE: &str = "WITH claimed AS (\
    INSERT INTO idempotency_keys (key, fingerprint, item_id, response, created_at) \
    SELECT $11, $12, $1, $13, $8 WHERE $11::text IS NOT NULL \
    ON CONFLICT (key) DO NOTHING RETURNING 1\
), inserted AS (\
    INSERT INTO items (id, name, name_lower, description, price_cents, quantity, tags, created_at, updated_at, version) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
    WHERE $11::text IS NULL OR EXISTS (SELECT 1 FROM claimed) RETURNING 1\
) \
SELECT EXISTS (SELECT 1 FROM inserted) AS created, prior.fingerprint, prior.item_id, prior.response \
FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS prior ON prior.key = $11::text";

impl PgStore {
    /// The stored outcome for an idempotency key, if the key is known: a second round trip, only
    /// when a concurrent request claimed the key after this one's snapshot was taken.
    async fn replay(&self, idem: &Idempotency) -> Result<Option<CreateOutcome>, StoreError> {
        let seen = sqlx::query(
            "SELECT fingerprint, item_id, response FROM idempotency_keys WHERE key = $1",
        )
        .bind(&idem.key)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        seen.as_ref().map(|row| replayed(row, idem)).transpose()
    }

    /// Why a conditional write matched no row: a second round trip, on that path only.
    async fn missing_or_stale<T>(&self, id: Uuid) -> Result<WriteOutcome<T>, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM items WHERE id = $1")
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

/// The outcome a known key gives: its original response, or `KeyReused` for another request.
fn replayed(row: &PgRow, idem: &Idempotency) -> Result<CreateOutcome, StoreError> {
    let fingerprint: String = row.try_get("fingerprint")?;
    if fingerprint != idem.fingerprint {
        return Ok(CreateOutcome::KeyReused);
    }
    Ok(CreateOutcome::Replayed {
        item_id: row.try_get("item_id")?,
        body: row.try_get("response")?,
    })
}

#[async_trait]
impl ItemStore for PgStore {
    #[tracing::instrument(level = "info", name = "INSERT items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "items"))]
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        let body = idempotency
            .map(|_| serde_json::to_string(item))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(CREATE)
            .bind(item.id)
            .bind(&item.name)
            .bind(item.name.to_lowercase())
            .bind(&item.description)
            .bind(item.price.cents())
            .bind(item.quantity)
            .bind(&item.tags)
            .bind(item.created_at)
            .bind(item.updated_at)
            .bind(item.version)
            .bind(idempotency.map(|i| &i.key))
            .bind(idempotency.map(|i| &i.fingerprint))
            .bind(body)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        if row.try_get::<bool, _>("created")? {
            return Ok(CreateOutcome::Created(item.clone()));
        }
        let idem = idempotency.ok_or_else(|| {
            StoreError::Corrupt("an insert without an idempotency key inserted nothing".into())
        })?;
        if row.try_get::<Option<String>, _>("fingerprint")?.is_some() {
            return replayed(&row, idem);
        }
        // The key was claimed by a request that committed after our snapshot: read it now.
        self.replay(idem)
            .await?
            .ok_or_else(|| StoreError::Corrupt("idempotency key vanished during a race".into()))
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, description, price_cents, quantity, tags, created_at, updated_at, version FROM items WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        row.as_ref().map(row_to_item).transpose()
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn list(&self, q: &ListQuery) -> Result<Vec<Item>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, price_cents, quantity, tags, created_at, updated_at, version FROM items \
             WHERE id > $1 \
               AND ($2::text IS NULL OR tags @> ARRAY[$2::text]) \
               AND ($3::text IS NULL OR strpos(name_lower, $3::text) > 0) \
             ORDER BY id LIMIT $4",
        )
        .bind(q.after)
        .bind(&q.tag)
        .bind(&q.name_contains)
        .bind(i64::from(q.limit))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter().map(row_to_item).collect()
    }

    #[tracing::instrument(level = "info", name = "UPDATE items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "items"))]
    async fn update(
        &self,
        id: Uuid,
        f: &NewItem,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError> {
        let row = sqlx::query(
            "UPDATE items SET name = $2, name_lower = $3, description = $4, price_cents = $5, quantity = $6, tags = $7, \
                    updated_at = $8, version = version + 1 \
             WHERE id = $1 AND ($9::bigint IS NULL OR version = $9::bigint) \
             RETURNING id, name, description, price_cents, quantity, tags, created_at, updated_at, version",
        )
        .bind(id)
        .bind(&f.name)
        .bind(f.name.to_lowercase())
        .bind(&f.description)
        .bind(f.price.cents())
        .bind(f.quantity)
        .bind(&f.tags)
        .bind(now)
        .bind(expected)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        match row {
            Some(row) => Ok(WriteOutcome::Done(row_to_item(&row)?)),
            None => self.missing_or_stale(id).await,
        }
    }

    #[tracing::instrument(level = "info", name = "DELETE items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "items"))]
    async fn delete(
        &self,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<WriteOutcome<()>, StoreError> {
        let done = sqlx::query(
            "DELETE FROM items WHERE id = $1 AND ($2::bigint IS NULL OR version = $2::bigint)",
        )
        .bind(id)
        .bind(expected)
        .execute(&mut *self.conn().await?)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(WriteOutcome::Done(()));
        }
        self.missing_or_stale(id).await
    }

    #[tracing::instrument(level = "info", name = "SELECT items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "items"))]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    #[tracing::instrument(level = "info", name = "DELETE idempotency_keys", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = "idempotency_keys"))]
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected())
    }
}
