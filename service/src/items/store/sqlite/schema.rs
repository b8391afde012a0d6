//! Opening SQLite connections (WAL, `synchronous=FULL`) and applying the schema migrations.

use std::{path::Path, sync::LazyLock, time::Duration};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use rusqlite_migration::{M, Migrations};

/// The migrations in `service/migrations/sqlite`, in order; the schema version is SQLite's
/// `user_version`. A test checks that every file in the directory is listed here.
const MIGRATION_FILES: &[(&str, &str)] = &[(
    "20261128000001_items.sql",
    include_str!("../../../../migrations/sqlite/20261128000001_items.sql"),
)];

static MIGRATIONS: LazyLock<Migrations<'static>> =
    LazyLock::new(|| Migrations::new(MIGRATION_FILES.iter().map(|(_, sql)| M::up(sql)).collect()));

/// Opens the connection that writes: creates the file if missing, turns on WAL and applies
/// the migrations.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path)
        .with_context(|| format!("opening SQLite database {}", path.display()))?;
    conn.busy_timeout(busy_timeout)?;
    // WAL: readers never wait for the writer. The journal mode is stored in the file.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "SQLite database {} refused WAL mode (journal_mode is {mode})",
        path.display()
    );
    // FULL: a commit is fsynced before the 2xx goes out, so it survives a crash of the
    // process and of the machine.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate(&mut conn).context("applying SQLite migrations")?;
    Ok(conn)
}

/// Opens a connection that only reads (`query_only`), over the file the writer created.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Brings the schema to the latest version.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    adopt_sqlx_history(conn)?;
    MIGRATIONS.to_latest(conn)?;
    Ok(())
}

/// Databases created before the rusqlite store were migrated by sqlx, which records its
/// history in `_sqlx_migrations` and leaves `user_version` at 0. Carry that history over, so
/// those migrations are not applied twice; refuse a history that is not a prefix of ours.
fn adopt_sqlx_history(conn: &Connection) -> anyhow::Result<()> {
    let user_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_sqlx: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if user_version != 0 || !has_sqlx {
        return Ok(());
    }
    let mut stmt =
        conn.prepare("SELECT version, success FROM _sqlx_migrations ORDER BY version")?;
    let applied = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (version, success)) in applied.iter().enumerate() {
        let ours = MIGRATION_FILES
            .get(i)
            .and_then(|(file, _)| file.split('_').next());
        anyhow::ensure!(
            *success && ours == Some(version.to_string().as_str()),
            "_sqlx_migrations lists migration {version} (success: {success}), which is not \
             migration {} of service/migrations/sqlite",
            i + 1
        );
    }
    conn.pragma_update(None, "user_version", applied.len() as i64)?;
    tracing::info!(
        migrations = applied.len(),
        "adopted the schema history sqlx recorded in _sqlx_migrations"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid_and_every_file_is_listed() {
        MIGRATIONS.validate().unwrap();
        let dir = format!("{}/migrations/sqlite", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATION_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn a_new_database_gets_wal_and_the_latest_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = open_writer(&path, Duration::from_secs(1)).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATION_FILES.len() as i64);
        drop(conn);
        // Opening again applies nothing twice.
        open_writer(&path, Duration::from_secs(1)).unwrap();
        let reader = open_reader(&path, Duration::from_secs(1)).unwrap();
        let e = reader.execute("DELETE FROM items", []).unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
    }

    /// The shape sqlx 0.9 gives its history table, with the row it writes for our first
    /// migration.
    fn sqlx_migrated(path: &Path, version: i64, success: bool) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(MIGRATION_FILES[0].1).unwrap();
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, 'items', ?2, x'00', 1)",
            rusqlite::params![version, success],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO items VALUES (x'0192b7a0000070008000000000000001', 'old', 'old', NULL, 100, 1, '[]', \
             '2026-11-28T00:00:00Z', '2026-11-28T00:00:00Z', 1)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn a_database_sqlx_migrated_is_adopted_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        sqlx_migrated(&path, 20261128000001, true);
        let conn = open_writer(&path, Duration::from_secs(1)).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_foreign_or_failed_sqlx_history_is_refused_by_name() {
        for (version, success) in [(20990101000001, true), (20261128000001, false)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("odd.db");
            sqlx_migrated(&path, version, success);
            let e = open_writer(&path, Duration::from_secs(1)).unwrap_err();
            assert!(
                format!("{e:#}").contains("_sqlx_migrations lists migration"),
                "{e:#}"
            );
        }
    }
}
