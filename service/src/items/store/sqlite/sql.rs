//! The SQL of every item operation on one SQLite connection, and rows to and from `Item`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::super::{CreateOutcome, Idempotency, ListQuery, StoreError, WriteOutcome};
use crate::items::model::{Item, NewItem, Price};

/// The columns `row_to_item` reads, as a literal for `concat!`: SQL text here is only ever
/// literals (docs/security.md).
macro_rules! columns {
    () => {
        "id, name, description, price_cents, quantity, tags, created_at, updated_at, version"
    };
}

/// A point read by primary key.
pub(super) fn get(conn: &Connection, id: Uuid) -> Result<Option<Item>, StoreError> {
    let mut stmt =
        conn.prepare_cached(concat!("SELECT ", columns!(), " FROM items WHERE id = ?1"))?;
    let item = stmt.query_row([id.as_bytes()], row_to_item).optional()?;
    item.transpose()
}

/// A page in id order, after the cursor, optionally filtered.
pub(super) fn list(conn: &Connection, q: &ListQuery) -> Result<Vec<Item>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM items \
         WHERE id > ?1 \
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(items.tags) WHERE json_each.value = ?2)) \
           AND (?3 IS NULL OR instr(name_lower, ?3) > 0) \
         ORDER BY id LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            q.after.as_bytes(),
            q.tag,
            q.name_contains,
            i64::from(q.limit)
        ],
        row_to_item,
    )?;
    rows.map(|row| row?).collect()
}

/// Inserts `item`; with a key, replays or refuses a key seen before instead (inside the
/// caller's transaction, so the check and the insert cannot interleave with another write).
pub(super) fn create(
    conn: &Connection,
    item: &Item,
    idempotency: Option<&Idempotency>,
) -> Result<CreateOutcome, StoreError> {
    if let Some(idem) = idempotency {
        let mut seen = conn.prepare_cached(
            "SELECT fingerprint, item_id, response FROM idempotency_keys WHERE key = ?1",
        )?;
        let row = seen
            .query_row([&idem.key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        if let Some((fingerprint, item_id, body)) = row {
            if fingerprint != idem.fingerprint {
                return Ok(CreateOutcome::KeyReused);
            }
            return Ok(CreateOutcome::Replayed {
                item_id: uuid_from(&item_id)?,
                body,
            });
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO items (id, name, name_lower, description, price_cents, quantity, tags, created_at, updated_at, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    insert.execute(params![
        item.id.as_bytes(),
        item.name,
        item.name.to_lowercase(),
        item.description,
        item.price.cents(),
        item.quantity,
        tags_json(&item.tags),
        timestamp(item.created_at)?,
        timestamp(item.updated_at)?,
        item.version,
    ])?;
    if let Some(idem) = idempotency {
        let body = serde_json::to_string(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut key = conn.prepare_cached(
            "INSERT INTO idempotency_keys (key, fingerprint, item_id, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        key.execute(params![
            idem.key,
            idem.fingerprint,
            item.id.as_bytes(),
            body,
            timestamp(item.created_at)?,
        ])?;
    }
    Ok(CreateOutcome::Created(item.clone()))
}

/// Replaces the fields of `id` and bumps its version, if the version is `expected` (or any).
pub(super) fn update(
    conn: &Connection,
    id: Uuid,
    f: &NewItem,
    expected: Option<i64>,
    now: OffsetDateTime,
) -> Result<WriteOutcome<Item>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "UPDATE items SET name = ?2, name_lower = ?3, description = ?4, price_cents = ?5, quantity = ?6, tags = ?7, \
                updated_at = ?8, version = version + 1 \
         WHERE id = ?1 AND (?9 IS NULL OR version = ?9) \
         RETURNING ",
        columns!()
    ))?;
    let row = stmt
        .query_row(
            params![
                id.as_bytes(),
                f.name,
                f.name.to_lowercase(),
                f.description,
                f.price.cents(),
                f.quantity,
                tags_json(&f.tags),
                timestamp(now)?,
                expected,
            ],
            row_to_item,
        )
        .optional()?;
    match row {
        Some(item) => Ok(WriteOutcome::Done(item?)),
        None => missing_or_stale(conn, id),
    }
}

/// Deletes `id` if its version is `expected` (or any).
pub(super) fn delete(
    conn: &Connection,
    id: Uuid,
    expected: Option<i64>,
) -> Result<WriteOutcome<()>, StoreError> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM items WHERE id = ?1 AND (?2 IS NULL OR version = ?2)")?;
    if stmt.execute(params![id.as_bytes(), expected])? == 1 {
        return Ok(WriteOutcome::Done(()));
    }
    missing_or_stale(conn, id)
}

/// Forgets idempotency keys recorded before `before`.
pub(super) fn purge_idempotency_keys(
    conn: &Connection,
    before: OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?;
    Ok(stmt.execute([timestamp(before)?])? as u64)
}

/// After a conditional write matched no row: was the item gone, or at another version?
fn missing_or_stale<T>(conn: &Connection, id: Uuid) -> Result<WriteOutcome<T>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM items WHERE id = ?1")?;
    Ok(if stmt.exists([id.as_bytes()])? {
        WriteOutcome::VersionMismatch
    } else {
        WriteOutcome::NotFound
    })
}

/// A row of `columns!()`; the inner error is stored data that does not parse.
fn row_to_item(row: &Row<'_>) -> rusqlite::Result<Result<Item, StoreError>> {
    let id: Vec<u8> = row.get(0)?;
    let tags: String = row.get(5)?;
    let created_at: String = row.get(6)?;
    let updated_at: String = row.get(7)?;
    let (name, description, price_cents, quantity, version) = (
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(8)?,
    );
    Ok((|| {
        Ok(Item {
            id: uuid_from(&id)?,
            name,
            description,
            price: Price::from_cents(price_cents),
            quantity,
            tags: serde_json::from_str(&tags)
                .map_err(|e| StoreError::Corrupt(format!("tags: {e}")))?,
            created_at: parse_timestamp(&created_at)?,
            updated_at: parse_timestamp(&updated_at)?,
            version,
        })
    })())
}

fn uuid_from(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("id: {e}")))
}

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

/// Timestamps are RFC 3339 text, as sqlx wrote them before (so existing files read back and
/// sort the same).
fn timestamp(at: OffsetDateTime) -> Result<String, StoreError> {
    at.format(&Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

fn parse_timestamp(text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_as_rfc3339_text() {
        let at = time::macros::datetime!(2026-12-02 07:45:27.123456 UTC);
        let text = timestamp(at).unwrap();
        assert_eq!(text, "2026-12-02T07:45:27.123456Z");
        assert_eq!(parse_timestamp(&text).unwrap(), at);
        assert!(matches!(
            parse_timestamp("yesterday"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn ids_that_are_not_16_bytes_are_corrupt_data() {
        assert!(uuid_from(&[1, 2, 3]).is_err());
        let id = Uuid::now_v7();
        assert_eq!(uuid_from(id.as_bytes()).unwrap(), id);
    }
}
