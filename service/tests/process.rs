//! The real binary as operators run it: config errors, `config`, `healthcheck`, crash
//! durability after `kill -9`, and SIGTERM under load.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    Backend,
    child::{Server, free_port, run},
    item,
};
use serde_json::Value;

#[test]
fn config_errors_exit_2_with_one_line_naming_key_and_source() {
    let dir = tempfile::tempdir().unwrap();
    /// (environment, shipshape.toml contents, what the error line must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            vec![("SHIPSHAPE_DATABASE__URLL", "x")],
            None,
            &["database.urll", "SHIPSHAPE_DATABASE__URLL"],
        ),
        (
            vec![("SHIPSHAPE_HTTP__BODY_LIMIT", "lots")],
            None,
            &["http.body_limit", "SHIPSHAPE_HTTP__BODY_LIMIT"],
        ),
        (
            vec![("SHIPSHAPE_DATABASE__URL", "mysql://h/db")],
            None,
            &["database.url", "SHIPSHAPE_DATABASE__URL"],
        ),
        (
            vec![("SHIPSHAPE_HTTP__DRAIN_DELAY", "soon")],
            None,
            &["http.drain_delay"],
        ),
        (
            vec![("SHIPSHAPE_TELEMETRY__SAMPLE_RATIO", "1.5")],
            None,
            &[
                "telemetry.sample_ratio",
                "SHIPSHAPE_TELEMETRY__SAMPLE_RATIO",
            ],
        ),
        (
            vec![("SHIPSHAPE_LOG__FORMAT", "xml")],
            None,
            &["log.format"],
        ),
        (
            vec![("SHIPSHAPE_DATABASE_URL", "sqlite://x.db")],
            None,
            &["database_url"],
        ),
        (
            vec![],
            Some("[http]\nlisen = \"0.0.0.0:1\"\n"),
            &["http.lisen", "shipshape.toml"],
        ),
        (
            vec![],
            Some("[http]\nbody_limit = 10\n"),
            &["http.body_limit", "shipshape.toml"],
        ),
        (
            vec![("SHIPSHAPE_DATABASE__URL", "file:/nonexistent/secret")],
            None,
            &["database.url", "/nonexistent/secret"],
        ),
        (
            vec![("SHIPSHAPE_CONFIG", "/nonexistent.toml")],
            None,
            &["/nonexistent.toml"],
        ),
    ];
    for (env, file, needles) in cases {
        let path = dir.path().join("shipshape.toml");
        match file {
            Some(text) => std::fs::write(&path, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let out = run(dir.path(), &["serve"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?} {file:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for n in needles {
            assert!(
                stderr.contains(n),
                "{env:?} {file:?}: {stderr:?} should name {n}"
            );
        }
    }
}

#[test]
fn config_command_prints_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shipshape.toml"),
        "[http]\ndrain_delay = \"7s\"\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, "postgres://app:hunter2@db.internal:5432/app\n").unwrap();
    let file_ref = format!("file:{}", secret.display());
    let out = run(
        dir.path(),
        &["config"],
        &[
            ("SHIPSHAPE_DATABASE__URL", &file_ref),
            ("SHIPSHAPE_LOG__LEVEL", "warn"),
            (
                "SHIPSHAPE_AUTH__HS256_SECRET",
                "hunter3-hunter3-hunter3-hunter3-hunter3",
            ),
            // Not configuration: Kubernetes service links for a Service named shipshape, and
            // a build input. They must not stop the service from starting.
            ("SHIPSHAPE_SERVICE_HOST", "10.96.0.12"),
            ("SHIPSHAPE_PORT", "tcp://10.96.0.12:8080"),
            ("SHIPSHAPE_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("SHIPSHAPE_GIT_REVISION", "abc123"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(
        parsed["http"]["drain_delay"].as_str(),
        Some("7s"),
        "file over defaults"
    );
    assert_eq!(
        parsed["log"]["level"].as_str(),
        Some("warn"),
        "env over file"
    );
    assert_eq!(
        parsed["database"]["url"].as_str(),
        Some("postgres://app:***@db.internal:5432/app")
    );
    assert!(!text.contains("hunter2"));
    assert_eq!(parsed["auth"]["hs256_secret"].as_str(), Some("[redacted]"));
    assert!(!text.contains("hunter3"));
}

#[test]
fn help_and_version_are_useful() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "migrate", "healthcheck", "config", "SHIPSHAPE_"] {
        assert!(help.contains(word), "{help}");
    }
    let out = run(dir.path(), &["--version"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(concat!("shipshape ", env!("CARGO_PKG_VERSION")))
    );
}

/// `shipshape serve` for load tests from one address: auth and rate limiting off
/// (tests/security.rs covers those), plus `extra`.
fn serve(dir: &Path, db_url: &str, port: u16, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("SHIPSHAPE_RATE_LIMIT__ENABLED", "false")];
    env.extend_from_slice(extra);
    Server::spawn(dir, db_url, port, &env)
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let down = run(
        dir.path(),
        &["healthcheck", "--url", &url, "--timeout", "1s"],
        &[],
    );
    assert_ne!(down.status.code(), Some(0), "nothing listening");
    let db = format!("sqlite://{}/db.sqlite", dir.path().display());
    let mut server = serve(dir.path(), &db, port, &[]);
    server.wait_ready(&reqwest::Client::new()).await;
    let up = run(dir.path(), &["healthcheck", "--url", &url], &[]);
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let listen = format!("127.0.0.1:{port}");
    let default_url = run(
        dir.path(),
        &["healthcheck"],
        &[("SHIPSHAPE_HTTP__LISTEN", &listen)],
    );
    assert_eq!(
        default_url.status.code(),
        Some(0),
        "default URL follows http.listen"
    );
    let not_ready = run(
        dir.path(),
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/nope"),
        ],
        &[],
    );
    assert_ne!(not_ready.status.code(), Some(0), "404 is not healthy");
}

on_both_backends!(
    acknowledged_writes_survive_kill_9,
    sigterm_under_load_drops_nothing_and_exits_0
);

async fn db_url(b: Backend, dir: &Path) -> String {
    match b {
        Backend::Sqlite => format!("sqlite://{}/data/shipshape.db", dir.display()),
        Backend::Postgres => common::pg::fresh_database().await,
    }
}

async fn acknowledged_writes_survive_kill_9(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(b, dir.path()).await;
    let port = free_port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = serve(dir.path(), &url, port, &[]);
    server.wait_ready(&client).await;

    let acked: Arc<std::sync::Mutex<HashMap<String, Value>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, acked, stop, post) = (
            client.clone(),
            acked.clone(),
            stop.clone(),
            server.url("/v1/items"),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let body = item(&format!("writer {w} item {n}"));
                match client.post(&post).json(&body).send().await {
                    Ok(r) if r.status() == 201 => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => continue, // body cut off by the kill: not acknowledged
                        };
                        acked
                            .lock()
                            .unwrap()
                            .insert(v["id"].as_str().unwrap().to_owned(), v);
                    }
                    _ => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    server.wait_exit(Duration::from_secs(5));
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the writers got going: {}", acked.len());

    let port = free_port();
    let mut again = serve(dir.path(), &url, port, &[]);
    again.wait_ready(&client).await;
    for (id, expected) in &acked {
        let got: Value = client
            .get(again.url(&format!("/v1/items/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            &got, expected,
            "acknowledged item {id} intact after kill -9"
        );
    }
    eprintln!(
        "{b:?}: {} acknowledged writes all present after kill -9",
        acked.len()
    );
}

async fn sigterm_under_load_drops_nothing_and_exits_0(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(b, dir.path()).await;
    let port = free_port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = serve(
        dir.path(),
        &url,
        port,
        &[
            ("SHIPSHAPE_HTTP__DRAIN_DELAY", "1s"),
            ("SHIPSHAPE_HTTP__SHUTDOWN_GRACE", "5s"),
        ],
    );
    server.wait_ready(&client).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, stop, post) = (client.clone(), stop.clone(), server.url("/v1/items"));
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut bad, mut unanswered) =
                (0u32, 0u32, Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("w{w} n{n}");
                match client.post(&post).json(&item(&name)).send().await {
                    Ok(r) if r.status() == 201 => ok += 1,
                    Ok(r) => bad.push(format!("{name}: status {}", r.status())),
                    // After the listener closes, new connections are refused: never accepted.
                    Err(e) if e.is_connect() => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // No answer: acceptable only if the server never took the request in
                    // (checked below against what was stored).
                    Err(_) => unanswered.push(name),
                }
            }
            (ok, refused, bad, unanswered)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness turns 503 during the drain");
    let (code, server) = tokio::task::spawn_blocking(move || {
        let code = server.wait_exit(Duration::from_secs(10));
        (code, server)
    })
    .await
    .unwrap();
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut refused, mut unanswered) = (0, 0, Vec::new());
    for w in workers {
        let (o, r, bad, u) = w.await.unwrap();
        assert!(bad.is_empty(), "accepted requests failed: {bad:?}");
        ok += o;
        refused += r;
        unanswered.extend(u);
    }
    assert_eq!(code, Some(0), "exit code");
    assert!(
        elapsed < Duration::from_secs(1 + 5 + 1),
        "exited within drain + grace: {elapsed:?}"
    );
    assert!(ok > 50, "load was flowing: {ok}");
    if !unanswered.is_empty() {
        let port = free_port();
        let mut again = serve(dir.path(), &url, port, &[]);
        again.wait_ready(&client).await;
        let stored = all_names(&client, &again).await;
        for name in &unanswered {
            assert!(
                !stored.contains(name),
                "{name} was processed but its response was lost"
            );
        }
    }
    eprintln!(
        "{b:?}: {ok} requests succeeded, {refused} connection attempts refused after close, \
         {} unanswered and never processed, exit 0 in {elapsed:?}",
        unanswered.len()
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    for phase in [
        "\"phase\":\"signal\"",
        "\"phase\":\"drain\"",
        "\"phase\":\"stop-accepting\"",
        "\"phase\":\"drained\"",
        "\"phase\":\"done\"",
    ] {
        assert!(log.contains(phase), "shutdown logs {phase}");
    }
}

async fn all_names(client: &reqwest::Client, server: &Server) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(server.url(&format!("/v1/items?limit=100&cursor={cursor}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for it in page["items"].as_array().unwrap() {
            names.insert(it["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return names,
        }
    }
}
