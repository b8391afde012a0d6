//! A throwaway PostgreSQL for tests: `SHIPSHAPE_TEST_PG_URL` if set (CI starts one), otherwise
//! a cluster this module starts from the installed binaries, shared by all test processes.
//!
//! That cluster lives under `$TMPDIR/shipshape-test-pg` and is stopped (and its data removed) a
//! few seconds after the last test process using it has exited, by a small watcher process
//! started with it. `SHIPSHAPE_TEST_PG_KEEP=1` opts in to keeping it running for reuse by the
//! next local `cargo test`; stop it with
//! `pg_ctl -D $TMPDIR/shipshape-test-pg/data stop` (as the `postgres` user when root).

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

/// Stops the shared cluster once no test process uses it (see the module docs). Runs as
/// `sh -c REAPER shipshape-test-pg-reaper ROOT PG_CTL [RUNUSER...]`, detached (`setsid -f`),
/// with no stdio, so neither cargo nor nextest waits for it. Every decision is taken under
/// `ROOT/lock` (the same `flock` the test processes take), so a test process either registers
/// before the watcher looks, or finds the cluster gone and starts a new one.
const REAPER: &str = r#"
root=$1; pg_ctl=$2; shift 2
echo $$ > "$root/reaper.pid"
exec 9>>"$root/lock"
idle=0
while sleep 1; do
  flock 9
  if [ -e "$root/keep" ]; then rm -f "$root/reaper.pid"; exit 0; fi
  live=0
  for f in "$root"/users/*; do
    [ -e "$f" ] || continue
    if kill -0 "${f##*/}" 2>/dev/null; then live=1; else rm -f "$f"; fi
  done
  if [ "$live" = 1 ]; then idle=0; else idle=$((idle + 1)); fi
  if [ "$idle" -ge 3 ]; then
    "$@" "$pg_ctl" -D "$root/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$root/data" "$root/port" "$root/users" "$root/log" "$root/reaper.pid"
    exit 0
  fi
  flock -u 9
done
"#;

fn keep_requested() -> bool {
    std::env::var("SHIPSHAPE_TEST_PG_KEEP").is_ok_and(|v| v == "1" || v == "true")
}

/// Records this test process as a user of the shared cluster (called under the lock).
fn register(root: &Path) -> Result<(), String> {
    let users = root.join("users");
    std::fs::create_dir_all(&users).map_err(|e| e.to_string())?;
    std::fs::write(users.join(std::process::id().to_string()), "").map_err(|e| e.to_string())?;
    if keep_requested() {
        std::fs::write(root.join("keep"), "").map_err(|e| e.to_string())
    } else {
        // Kept only while the runs using it ask for that.
        let _ = std::fs::remove_file(root.join("keep"));
        Ok(())
    }
}

fn reaper_alive(root: &Path) -> bool {
    std::fs::read_to_string(root.join("reaper.pid"))
        .ok()
        .and_then(|pid| std::fs::read(format!("/proc/{}/cmdline", pid.trim())).ok())
        .is_some_and(|cmd| String::from_utf8_lossy(&cmd).contains("shipshape-test-pg-reaper"))
}

/// Starts the watcher unless one is running or the cluster is to be kept (under the lock).
fn ensure_reaper(root: &Path, pg_ctl: &Path) -> Result<(), String> {
    if keep_requested() || reaper_alive(root) {
        return Ok(());
    }
    let _ = std::fs::remove_file(root.join("reaper.pid"));
    let mut cmd = Command::new("setsid");
    cmd.args(["-f", "sh", "-c", REAPER, "shipshape-test-pg-reaper"])
        .arg(root)
        .arg(pg_ctl);
    if is_root() {
        cmd.args(["runuser", "-u", "postgres", "--"]);
    }
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("setsid: {e}"))?;
    if !status.success() {
        return Err(format!("starting the cluster watcher: {status}"));
    }
    // Wait for it to announce itself, so the next test process does not start a second one.
    for _ in 0..100 {
        if reaper_alive(root) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err("the cluster watcher did not start".into())
}

/// Starts (or reuses) one cluster per machine user under the temp dir, guarded by a file lock
/// so parallel test processes share it, and registers this process as its user. The watcher
/// stops it after the last user is gone, unless `SHIPSHAPE_TEST_PG_KEEP=1`.
fn start_shared_cluster() -> Result<String, String> {
    let initdb = pg_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = pg_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let root = std::env::temp_dir().join("shipshape-test-pg");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let lock = File::create(root.join("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    register(&root)?;
    let data = root.join("data");
    let port_file = root.join("port");
    let data_s = data.to_string_lossy().into_owned();
    if let Ok(port) = std::fs::read_to_string(&port_file)
        && run(&pg_ctl, &["-D", &data_s, "status"]).is_ok()
    {
        ensure_reaper(&root, &pg_ctl)?;
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
    ensure_reaper(&root, &pg_ctl)?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
