// Rule test for rust-sql-format / rust-sqlx-assert-sql-safe (semgrep --test).
use sqlx::{AssertSqlSafe, Executor, PgPool, QueryBuilder, Postgres};
use std::fmt::Write;

async fn bad(pool: &PgPool, name: &str, order: &str) -> sqlx::Result<()> {
    // ruleid: rust-sql-format
    sqlx::query(&format!("SELECT * FROM items WHERE name = '{name}'")).fetch_all(pool).await?;

    let sql = format!("SELECT * FROM items ORDER BY {order}");
    // ruleid: rust-sql-format, rust-sqlx-assert-sql-safe
    sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;

    // ruleid: rust-sql-format
    sqlx::query_as::<_, Item>(AssertSqlSafe(format!("SELECT * FROM items LIMIT {}", 10)))
        .fetch_all(pool)
        .await?;

    // ruleid: rust-sql-format
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
        .fetch_one(pool)
        .await?;

    let mut dynamic = String::from("DELETE FROM items WHERE name = '");
    dynamic.push_str(name);
    // ruleid: rust-sql-format, rust-sqlx-assert-sql-safe
    sqlx::raw_sql(AssertSqlSafe(dynamic)).execute(pool).await?;

    let mut w = String::new();
    write!(w, "SELECT {name}").ok();
    // ruleid: rust-sql-format, rust-sqlx-assert-sql-safe
    pool.execute(AssertSqlSafe(w)).await?;

    let plus = "SELECT * FROM items WHERE name = '".to_string() + name + "'";
    // ruleid: rust-sql-format, rust-sqlx-assert-sql-safe
    query_as::<_, Item>(AssertSqlSafe(plus));

    // ruleid: rust-sql-format
    let rows = sqlx::query_as::<_, Item>(&format!("SELECT * FROM items WHERE name = '{name}'"));
    // ruleid: rust-sql-format
    let n = sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {name}"));

    let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM items WHERE ");
    // ruleid: rust-sql-format
    qb.push(format!("name = '{name}'"));
    // ok: rust-sql-format
    qb.push("name = ").push_bind(name);

    // ruleid: rust-sql-format
    let qb2: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT * FROM {name}"));
    Ok(())
}

async fn fine(pool: &PgPool, name: &str, desc: bool) -> sqlx::Result<()> {
    // ok: rust-sql-format
    sqlx::query("SELECT * FROM items WHERE name = $1").bind(name).fetch_all(pool).await?;
    // ok: rust-sql-format
    sqlx::query_as::<_, Item>("SELECT * FROM items WHERE id = $1").bind(1).fetch_one(pool).await?;
    // ok: rust-sql-format
    sqlx::query(AssertSqlSafe(include_str!("../migrations/x.sql")));
    // ok: rust-sql-format
    sqlx::query(concat!("SELECT 1", " + 1"));
    let sql = if desc {
        "SELECT * FROM items ORDER BY id DESC"
    } else {
        "SELECT * FROM items ORDER BY id"
    };
    // ok: rust-sql-format
    sqlx::query(sql).fetch_all(pool).await?;
    // An unrelated Vec<String> is not a QueryBuilder.
    let mut v: Vec<String> = Vec::new();
    // ok: rust-sql-format
    v.push(format!("{name}"));
    // ok: rust-sql-format
    let msg = format!("item {name} not found");
    Ok(())
}

fn escape_hatch(stmt: String, table: &'static str) {
    // ruleid: rust-sqlx-assert-sql-safe
    sqlx::query(AssertSqlSafe(stmt));
    // ok: rust-sqlx-assert-sql-safe
    sqlx::query(AssertSqlSafe("SELECT 1"));
    // ok: rust-sqlx-assert-sql-safe
    sqlx::query(AssertSqlSafe(include_str!("q.sql")));
    // A documented exception stays visible in review:
    // ok: rust-sqlx-assert-sql-safe
    sqlx::query(AssertSqlSafe(stmt)); // nosemgrep: rust-sqlx-assert-sql-safe -- built from the fixed COLUMNS list only
}

fn push_filter(qb: &mut QueryBuilder<Postgres>, column: &str, value: &str) {
    // ruleid: rust-sql-format
    qb.push(format!(" AND {column} = "));
    // ok: rust-sql-format
    qb.push(" AND name = ").push_bind(value);
}

// rusqlite: the SQLite store's connection methods are sinks too.
fn sqlite_bad(conn: &rusqlite::Connection, name: &str) -> rusqlite::Result<()> {
    // ruleid: rust-sql-format
    conn.prepare_cached(&format!("SELECT * FROM items WHERE name = '{name}'"))?;
    let sql = format!("DELETE FROM items WHERE name = '{name}'");
    // ruleid: rust-sql-format
    conn.execute(&sql, [])?;
    // ruleid: rust-sql-format
    conn.execute_batch(&("DROP TABLE ".to_owned() + name))?;
    Ok(())
}

fn sqlite_good(conn: &rusqlite::Connection, name: &str) -> rusqlite::Result<()> {
    // ok: rust-sql-format
    conn.prepare_cached(concat!("SELECT ", "id", " FROM items WHERE name = ?1"))?;
    // ok: rust-sql-format
    conn.execute("DELETE FROM items WHERE name = ?1", [name])?;
    Ok(())
}
