//! A throwaway PostgreSQL for tests: `SHIPSHAPE_TEST_PG_URL` if set (CI starts one), otherwise
//! a cluster this module starts from the installed binaries, shared by all test processes.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use sqlx::{Connection, PgConnection};

static URL: OnceLock<Option<String>> = OnceLock::new();

/// True (after a loud message) when no PostgreSQL can be had and we are not in CI.
/// In CI (`CI=true`) a missing PostgreSQL fails the test instead.
pub fn skip_without_postgres() -> bool {
    if admin_url().is_some() {
        return false;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but no PostgreSQL: set SHIPSHAPE_TEST_PG_URL or install PostgreSQL (initdb, pg_ctl)"
        );
    }
    eprintln!(
        "\n!!! SKIPPING PostgreSQL test: no SHIPSHAPE_TEST_PG_URL and no initdb/pg_ctl found !!!\n"
    );
    true
}

/// Superuser URL of the test cluster, if there is one.
pub fn admin_url() -> Option<String> {
    URL.get_or_init(|| {
        std::env::var("SHIPSHAPE_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| match start_shared_cluster() {
                Ok(url) => Some(url),
                Err(e) => {
                    eprintln!("cannot start a test PostgreSQL: {e}");
                    None
                }
            })
    })
    .clone()
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url().expect("PostgreSQL available");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin).await.expect("connect admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("url has a database");
    format!("{base}/{name}")
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    if let Ok(path) = which(name) {
        return Some(path);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

fn is_root() -> bool {
    // SAFETY-free check: root's home or uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (PostgreSQL refuses root).
fn run(bin: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts (or reuses) one cluster per machine user under the temp dir, guarded by a file lock
/// so parallel test processes share it. It is left running for the next test run.
fn start_shared_cluster() -> Result<String, String> {
    let initdb = pg_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = pg_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let root = std::env::temp_dir().join("shipshape-test-pg");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let lock = File::create(root.join("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let data = root.join("data");
    let port_file = root.join("port");
    let data_s = data.to_string_lossy().into_owned();
    if let Ok(port) = std::fs::read_to_string(&port_file)
        && run(&pg_ctl, &["-D", &data_s, "status"]).is_ok()
    {
        return Ok(format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            port.trim()
        ));
    }
    let _ = std::fs::remove_dir_all(&data);
    if is_root() {
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&root)
            .status();
    }
    run(
        &initdb,
        &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
        root.display()
    );
    let log = root.join("log").to_string_lossy().into_owned();
    run(
        &pg_ctl,
        &["-D", &data_s, "-l", &log, "-o", &opts, "-w", "start"],
    )?;
    std::fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
