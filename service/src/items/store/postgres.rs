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

    async fn conn(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        acquire(&self.pool, &self.acquire_wait).await
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

/// SQLSTATE 23505 unique_violation.
fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

impl PgStore {
    /// The stored outcome for an idempotency key, if the key is known.
    async fn replay(&self, idem: &Idempotency) -> Result<Option<CreateOutcome>, StoreError> {
        let seen = sqlx::query(
            "SELECT fingerprint, item_id, response FROM idempotency_keys WHERE key = $1",
        )
        .bind(&idem.key)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        let Some(row) = seen else { return Ok(None) };
        let fingerprint: String = row.try_get("fingerprint")?;
        if fingerprint != idem.fingerprint {
            return Ok(Some(CreateOutcome::KeyReused));
        }
        Ok(Some(CreateOutcome::Replayed {
            item_id: row.try_get("item_id")?,
            body: row.try_get("response")?,
        }))
    }

    async fn insert(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if let Some(idem) = idempotency {
            // Claim the key first: a concurrent request with the same key waits on this row
            // and then fails with a unique violation, after which it replays our response.
            let body =
                serde_json::to_string(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, item_id, response, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&idem.key)
            .bind(&idem.fingerprint)
            .bind(item.id)
            .bind(body)
            .bind(item.created_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO items (id, name, name_lower, description, price_cents, quantity, tags, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

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

#[async_trait]
impl ItemStore for PgStore {
    #[tracing::instrument(level = "info", name = "INSERT items", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "items"))]
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some(idem) = idempotency
            && let Some(outcome) = self.replay(idem).await?
        {
            return Ok(outcome);
        }
        match self.insert(item, idempotency).await {
            Ok(()) => Ok(CreateOutcome::Created(item.clone())),
            Err(StoreError::Database(e)) if is_unique_violation(&e) && idempotency.is_some() => {
                let idem = idempotency.ok_or(StoreError::Database(e))?;
                match self.replay(idem).await? {
                    Some(outcome) => Ok(outcome),
                    None => Err(StoreError::Corrupt(
                        "idempotency key vanished during a race".into(),
                    )),
                }
            }
            Err(e) => Err(e),
        }
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
