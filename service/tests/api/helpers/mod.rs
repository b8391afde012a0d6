//! Test helpers: spawn the app on an ephemeral port against SQLite or a throwaway PostgreSQL.
#![allow(dead_code)]

pub mod child;
pub mod pg;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use shipshape::{
    config::{Config, Secret},
    db,
    http::AppState,
    items::store::ItemStore,
    startup::Application,
};
use tokio::sync::oneshot;

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
    c.database.url = Secret::new(url);
    c.database.max_connections = 5;
    // Auth and rate limiting are exercised in tests/security.rs; elsewhere they would only
    // get in the way (tokens on every call, bursts of test traffic from one address).
    c.auth.enabled = false;
    c.rate_limit.enabled = false;
    c
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
    shipshape::auth::keys::mint_hs256(&auth, sub, &scopes, Duration::from_secs(3600))
        .expect("mint token")
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
        let store = db::connect(&config.database).await.expect("connect");
        Self::spawn_store(config, store, dir).await
    }

    /// Spawns over a given store (e.g. a wrapper that injects delays or failures).
    pub async fn spawn_store(
        config: Config,
        store: Arc<dyn ItemStore>,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let app = Application::with_store(config, store).await.expect("bind");
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
