//! Test helpers: spawn the app on an ephemeral port against SQLite or a throwaway PostgreSQL
//! (or build its `Router` without a port), sign tokens, talk raw HTTP.

pub mod child;
pub mod jwt;
pub mod pg;

use std::{sync::Arc, time::Duration};

use axum::Router;
use serde_json::{Value, json};
use shipshape::{
    config::{Config, Secret},
    http::AppState,
    items::store::{self, Storage},
    metrics::Metrics,
    startup::Application,
    telemetry::TracePolicy,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
};

/// Which storage backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each `async fn name(backend: Backend)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   if $crate::helpers::pg::skip_without_postgres() { return; }
                   super::$name($crate::helpers::Backend::Postgres).await
               } )*
        }
    };
}

/// A running instance and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    /// The `http.metrics_listen` listener's base URL, when configured.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A fresh, empty database URL for `backend` (plus the temp dir that holds a SQLite file).
pub async fn database_url(backend: Backend) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/data/shipshape.db", dir.path().display()),
        Backend::Postgres => pg::fresh_database().await,
    };
    (url, dir)
}

/// Test defaults: loopback ephemeral port, no drain delay, short timeouts.
pub fn test_config(url: &str) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.http.drain_delay = Duration::ZERO;
    c.http.shutdown_grace = Duration::from_secs(10);
    c.database.url = url.parse().expect("database url");
    c.database.max_connections = 5;
    // Auth and rate limiting are exercised in the auth, keys and rate_limit modules; elsewhere
    // they would only get in the way (tokens on every call, bursts of test traffic from one
    // address).
    c.auth.enabled = false;
    c.rate_limit.enabled = false;
    c
}

/// The whole app as a `Router`, no port bound (drive it with `tower::ServiceExt::oneshot`):
/// connected and its state built as `startup::Application` does. The one place the router
/// tests construct the app, so a change to those constructors is a change here only.
pub async fn router_for(mut config: Config) -> Router {
    config.auth.load_keys().expect("keys");
    let metrics = Arc::new(Metrics::new());
    let storage = connect(&config, &metrics).await;
    let state = AppState::new(storage, metrics, &config, TracePolicy::default());
    shipshape::http::router(state, &config)
}

/// Connects to `config`'s database as `Application::build` does.
pub async fn connect(config: &Config, metrics: &Metrics) -> Storage {
    store::connect(&config.database, metrics.store())
        .await
        .expect("connect")
}

/// A 48-byte HS256 secret for tests.
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret-0123456789ab";

/// Turns auth on with [`TEST_SECRET`] (a `spawn_with` tweak).
pub fn with_auth(c: &mut Config) {
    c.auth.enabled = true;
    c.auth.hs256_secret = Secret::new(TEST_SECRET);
}

/// An HS256 token for `sub` with `scopes`, valid for an hour, signed with [`TEST_SECRET`].
pub fn token(sub: &str, scopes: &[&str]) -> String {
    let auth = shipshape::config::AuthConfig {
        hs256_secret: Secret::new(TEST_SECRET),
        ..Default::default()
    };
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    shipshape::auth::mint_hs256(&auth, sub, &scopes, Duration::from_secs(3600)).expect("mint token")
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a config tweak.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let (url, dir) = database_url(backend).await;
        let mut config = test_config(&url);
        tweak(&mut config);
        let metrics = Arc::new(Metrics::new());
        let storage = connect(&config, &metrics).await;
        Self::spawn_storage(config, storage, metrics, dir).await
    }

    /// Spawns over given storage (e.g. a store wrapper that injects delays or failures); loads
    /// the keys the config names, as `Config::load` does.
    pub async fn spawn_storage(
        mut config: Config,
        storage: Storage,
        metrics: Arc<Metrics>,
        dir: tempfile::TempDir,
    ) -> TestApp {
        config.auth.load_keys().expect("keys");
        let app = Application::with_storage(config, storage, metrics, TracePolicy::default())
            .expect("bind");
        let base = format!("http://{}", app.addr());
        let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
        let state = app.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        TestApp {
            base,
            metrics_base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            state,
            stop: Some(stop),
            done: Some(done),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_item(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/items"))
            .json(body)
            .send()
            .await
            .expect("POST /v1/items")
    }

    /// Creates a valid item and returns its JSON.
    pub async fn create(&self, name: &str) -> Value {
        let r = self.post_item(&item(name)).await;
        assert_eq!(r.status(), 201, "create {name}");
        r.json().await.expect("json")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.take() {
            Some(done) => done.await.expect("run task"),
            None => Ok(()),
        }
    }

    /// Starts graceful shutdown without waiting; returns the join handle.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("running")
    }
}

/// A valid create body.
pub fn item(name: &str) -> Value {
    json!({"name": name, "description": "a test item", "price": 19.99, "quantity": 3, "tags": ["test", "kitchen"]})
}

/// Asserts a problem+json response with `status`, returns its body.
pub async fn assert_problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status, "status");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(
        ct.as_deref(),
        Some("application/problem+json"),
        "content type"
    );
    let trace = r
        .headers()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = r.json().await.expect("problem json");
    assert_eq!(body["status"], status, "{body}");
    for key in ["type", "title", "detail"] {
        assert!(body[key].is_string(), "problem has {key}: {body}");
    }
    assert_eq!(
        body["trace_id"].as_str(),
        trace.as_deref(),
        "trace id in body = header"
    );
    body
}

/// A file under `service/tests/fixtures/` (found from the crate directory at run time).
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `method path` with an optional `Authorization` value (and an item body for POST and PUT).
pub async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> reqwest::Response {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m.clone(), app.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if m == reqwest::Method::POST || m == reqwest::Method::PUT {
        req = req.json(&item("guarded"));
    }
    req.send().await.expect("request")
}

/// The `WWW-Authenticate` challenge, or empty.
pub fn www_auth(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// `shipshape_requests_rejected_total{reason}` from the API port's `/metrics`.
pub async fn rejected(app: &TestApp, reason: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let needle = format!("shipshape_requests_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Asserts a 401 with an `invalid_token` challenge (or a bare one for a missing token).
pub async fn assert_401(r: reqwest::Response, missing: bool, what: &str) {
    let challenge = www_auth(&r);
    if missing {
        assert_eq!(challenge, r#"Bearer realm="shipshape""#, "{what}");
    } else {
        assert!(
            challenge.starts_with(
                r#"Bearer realm="shipshape", error="invalid_token", error_description=""#
            ),
            "{what}: {challenge}"
        );
    }
    let body = assert_problem(r, 401).await;
    assert_eq!(body["type"], "urn:shipshape:problem:unauthorized", "{what}");
}

/// Sends raw bytes and returns what the server answered until it closed the connection (or
/// `limit` passed), and whether it closed.
pub async fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything (413, 431): keep going.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
