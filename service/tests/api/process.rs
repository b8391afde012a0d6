//! The real binary as operators run it: config errors, `config`, `healthcheck`, crash
//! durability after `kill -9`, and SIGTERM under load.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::helpers::{
    Backend,
    child::{Server, free_port, run},
    item,
};

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
/// (the auth and rate_limit modules cover those), plus `extra`.
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
        Backend::Postgres => crate::helpers::pg::fresh_database().await,
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

// ------------------------------------------------------------------------------------------
// Commands that serve nothing need no key; `serve --ephemeral-key` is the local mode.

#[test]
fn config_and_migrate_need_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/data/m.db", dir.path().display());
    // Auth is on by default and no key is configured.
    let out = run(dir.path(), &["config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "config: {stderr}");
    let parsed: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(parsed["auth"]["enabled"].as_bool(), Some(true));
    let out = run(
        dir.path(),
        &["migrate"],
        &[("SHIPSHAPE_DATABASE__URL", db.as_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "migrate: {stderr}");
    assert!(
        dir.path().join("data/m.db").exists(),
        "migrate made the database"
    );
}

/// `shipshape config` shows the span export endpoint that is in effect, and where it is from.
#[test]
fn config_shows_the_effective_otlp_endpoint_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = |env: &[(&str, &str)]| -> (String, String) {
        let out = run(dir.path(), &["config"], env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let parsed: toml::Value = toml::from_str(&text).expect("still valid TOML");
        let value = parsed["telemetry"]["otlp_endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let note = text
            .lines()
            .find(|l| l.starts_with("# effective:"))
            .unwrap_or_else(|| panic!("no effective-endpoint note in\n{text}"))
            .to_owned();
        (value, note)
    };
    let (value, note) = telemetry(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
    assert_eq!(value, "http://collector:4318");
    assert!(
        note.contains("http://collector:4318/v1/traces")
            && note.contains("env OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{note}"
    );
    let (value, note) = telemetry(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
        ("SHIPSHAPE_TELEMETRY__OTLP_ENDPOINT", "http://mine:4318/"),
    ]);
    assert_eq!(value, "http://mine:4318/");
    assert!(
        note.contains("http://mine:4318/v1/traces") && note.contains("telemetry.otlp_endpoint"),
        "{note}"
    );
    let (value, note) = telemetry(&[]);
    assert_eq!(value, "");
    assert!(note.contains("no span export"), "{note}");
}

/// `serve --ephemeral-key` on `port`; stderr (where the token goes) to a file of its own.
fn serve_ephemeral(
    dir: &Path,
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Server, PathBuf) {
    let log = dir.join(format!("ephemeral-{port}.log"));
    let stderr = dir.join(format!("ephemeral-{port}.stderr"));
    let child = crate::helpers::child::command(dir)
        .args(args)
        .env("SHIPSHAPE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SHIPSHAPE_DATABASE__URL",
            format!("sqlite://{}/data/e.db", dir.display()),
        )
        .env("SHIPSHAPE_HTTP__DRAIN_DELAY", "0s")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn shipshape");
    (Server { child, port, log }, stderr)
}

#[tokio::test]
async fn ephemeral_key_prints_one_working_token() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    for (args, env) in [
        (&["serve", "--ephemeral-key"][..], &[][..]),
        (
            &["serve"][..],
            &[("SHIPSHAPE_AUTH__EPHEMERAL_KEY", "true")][..],
        ),
    ] {
        let port = free_port();
        let (mut server, stderr) = serve_ephemeral(dir.path(), port, args, env);
        server.wait_ready(&client).await;
        let printed = std::fs::read_to_string(&stderr).unwrap();
        let tokens: Vec<&str> = printed.lines().filter(|l| l.starts_with("eyJ")).collect();
        assert_eq!(tokens.len(), 1, "{args:?}: one token on stderr:\n{printed}");
        let token = tokens[0];
        assert!(printed.contains("EPHEMERAL KEY"), "{printed}");
        assert!(printed.contains("dies with the process"), "{printed}");

        let items = server.url("/v1/items");
        let r = client.get(&items).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200, "the printed token reads");
        let r = client
            .post(&items)
            .bearer_auth(token)
            .json(&item("ephemeral"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "the printed token writes");
        let r = client.get(&items).send().await.unwrap();
        assert_eq!(r.status(), 401, "auth is on");
        // A well-formed token signed with another key.
        let other = crate::helpers::token("local", &["items:read"]);
        let r = client.get(&items).bearer_auth(&other).send().await.unwrap();
        assert_eq!(r.status(), 401, "a token of another key is refused");
        let mut tampered = token.to_owned();
        tampered.push('A');
        let r = client
            .get(&items)
            .bearer_auth(&tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a tampered token is refused");

        let log = server.stop().join("\n");
        assert!(
            log.contains("ephemeral"),
            "the log says an ephemeral key is in use"
        );
        assert!(!log.contains(token), "the token is not in the log");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature));
        assert!(
            !log.lines()
                .any(|l| l.contains("hs256_secret") && !l.contains("[redacted]")),
            "the key is not in the log"
        );
    }
}

#[test]
fn ephemeral_key_is_refused_with_a_key_postgres_or_auth_off() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-configured-secret-a-configured-secret-0123";
    /// (arguments, environment, what the one error line must name)
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            &["serve", "--ephemeral-key"],
            vec![("SHIPSHAPE_AUTH__HS256_SECRET", secret)],
            &[
                "auth.ephemeral_key",
                "command line --ephemeral-key",
                "auth.hs256_secret",
                "SHIPSHAPE_AUTH__HS256_SECRET",
            ],
        ),
        (
            &["serve"],
            vec![
                ("SHIPSHAPE_AUTH__EPHEMERAL_KEY", "true"),
                ("SHIPSHAPE_AUTH__JWKS_FILE", "/some/jwks.json"),
            ],
            &[
                "auth.ephemeral_key",
                "SHIPSHAPE_AUTH__EPHEMERAL_KEY",
                "auth.jwks_file",
            ],
        ),
        (
            &["serve", "--ephemeral-key"],
            vec![(
                "SHIPSHAPE_DATABASE__URL",
                "postgres://app:hunter2@127.0.0.1:1/app",
            )],
            &[
                "auth.ephemeral_key",
                "PostgreSQL",
                "database.url",
                "replica",
            ],
        ),
        (
            &["serve", "--ephemeral-key"],
            vec![("SHIPSHAPE_AUTH__ENABLED", "false")],
            &[
                "auth.ephemeral_key",
                "auth.enabled",
                "SHIPSHAPE_AUTH__ENABLED",
            ],
        ),
    ];
    for (args, env, needles) in cases {
        let out = run(dir.path(), args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for n in needles {
            assert!(
                stderr.contains(n),
                "{args:?} {env:?}: {stderr:?} should name {n}"
            );
        }
        assert!(
            !stderr.contains("hunter2") && !stderr.contains(secret),
            "{stderr}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Graceful drain for clients that open a new connection per request and ignore readiness.

/// What one client saw: answered requests, and anything else than a refused connection.
#[derive(Default)]
struct ClientTally {
    answered: u32,
    refused: u32,
    errors: Vec<String>,
}

/// One request on a fresh connection (no `Connection: close` from the client): `Ok(true)`
/// answered 200, `Ok(false)` no connection (connect refused or reset: nothing sent), `Err`
/// anything else, such as a reset after connecting or a request left unanswered.
fn one_request(addr: &std::net::SocketAddr) -> Result<bool, String> {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
        Ok(s) => s,
        // Refused, or reset mid-handshake as the listener closed: connect() failed, so the
        // client has no connection and sent nothing (the kernel's limit, not a dropped one).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: drain\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read: {e} after {} bytes", got.len()))?;
        if n == 0 {
            return Err(format!(
                "connection closed after {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .ok_or_else(|| format!("no content-length: {head}"))?
                .map_err(|e| format!("bad content-length: {e}"))?;
            if body.len() >= length {
                return if head.starts_with("HTTP/1.1 200") {
                    Ok(true)
                } else {
                    Err(format!("answered {head}"))
                };
            }
        }
    }
}

/// 8 clients, each opening a new connection for every request and ignoring readiness, load
/// the real binary through SIGTERM until the listener is gone. Every connection the kernel
/// completed must be answered: connections refused after the listener closed are fine (the
/// client sent nothing), a reset or an unanswered request is not. Repeated a few times: the
/// moment the listener closes is a race.
#[test]
fn sigterm_with_a_new_connection_per_request_resets_nothing() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut report = Vec::new();
    for round in 0..ROUNDS {
        let port = free_port();
        let db = format!("sqlite://{}/data/drain-{round}.db", dir.path().display());
        let mut server = serve(
            dir.path(),
            &db,
            port,
            &[
                ("SHIPSHAPE_HTTP__DRAIN_DELAY", "300ms"),
                ("SHIPSHAPE_HTTP__SHUTDOWN_GRACE", "5s"),
                ("SHIPSHAPE_LOG__LEVEL", "warn"),
            ],
        );
        rt.block_on(server.wait_ready(&reqwest::Client::new()));
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut t = ClientTally::default();
                    // Until the listener is gone (refused twice in a row), bounded in time.
                    while t.refused < 2 && Instant::now() < deadline {
                        match one_request(&addr) {
                            Ok(true) => {
                                t.answered += 1;
                                t.refused = 0;
                            }
                            Ok(false) => t.refused += 1,
                            Err(e) => t.errors.push(e),
                        }
                    }
                    t
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        let t0 = Instant::now();
        server.signal("TERM");
        let code = server.wait_exit(Duration::from_secs(10));
        let elapsed = t0.elapsed();
        let tallies: Vec<ClientTally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let answered: u32 = tallies.iter().map(|t| t.answered).sum();
        let errors: Vec<&String> = tallies.iter().flat_map(|t| &t.errors).collect();
        assert!(
            errors.is_empty(),
            "round {round}: {} connection(s) reset or unanswered (of {answered} answered): {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        assert!(
            tallies.iter().all(|t| t.refused >= 2),
            "round {round}: every client ended on a refused connection (the listener closed)"
        );
        assert_eq!(
            code,
            Some(0),
            "round {round}: exit code\n{}",
            server.log_text()
        );
        assert!(
            answered > 100,
            "round {round}: load was flowing: {answered}"
        );
        report.push(format!("{answered} answered, exit 0 in {elapsed:?}"));
    }
    eprintln!(
        "new connection per request through SIGTERM: {}",
        report.join("; ")
    );
}
