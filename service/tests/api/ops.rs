//! Operational behaviour over real HTTP: probes, metrics, docs, trace headers, load shedding,
//! timeouts, database outages and graceful shutdown with requests in flight.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::Value;
use shipshape::items::{
    model::{Item, NewItem},
    store::{CreateOutcome, Idempotency, ItemStore, ListQuery, Storage, StoreError, WriteOutcome},
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, assert_problem, item, test_config};

on_both_backends!(
    probes_answer,
    metrics_count_requests_by_route_template,
    openapi_describes_every_route,
    trace_context_is_honoured_and_returned,
    slow_requests_time_out_with_503,
    excess_concurrency_is_shed_with_503,
    database_outage_gives_503_and_recovers,
);

/// With `http.metrics_listen`, `/metrics` moves: the API port answers 404 (problem+json) and
/// leaves it out of its OpenAPI document; the metrics listener serves it (and nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_moves_metrics_off_the_api_port() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics = app.metrics_base.clone().expect("metrics listener bound");
    app.create("counted").await;
    assert_problem(app.get("/metrics").await, 404).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"].get("/metrics").is_none(), "{}", doc["paths"]);
    assert!(doc["paths"].get("/healthz").is_some());
    let r = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("http_server_requests_total{"),
        "the metrics listener serves the API's metrics: {text:.300}"
    );
    let r = app
        .client
        .get(format!("{metrics}/v1/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the metrics listener serves only /metrics");
    app.shutdown().await.unwrap();

    // Without it, the API port serves /metrics (and documents it).
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"].get("/metrics").is_some());
    app.shutdown().await.unwrap();
}

/// Wraps a real store, adding a delay to reads and writes and an on/off "outage" switch.
struct Faulty {
    inner: Arc<dyn ItemStore>,
    delay: std::sync::Mutex<Duration>,
    down: std::sync::atomic::AtomicBool,
}

impl Faulty {
    fn new(inner: Arc<dyn ItemStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            delay: Default::default(),
            down: Default::default(),
        })
    }
    fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
    async fn gate(&self) -> Result<(), StoreError> {
        let d = *self.delay.lock().unwrap();
        tokio::time::sleep(d).await;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        Ok(())
    }
}

#[async_trait]
impl ItemStore for Faulty {
    async fn create(
        &self,
        item: &Item,
        idem: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        self.gate().await?;
        self.inner.create(item, idem).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        self.gate().await?;
        self.inner.get(id).await
    }
    async fn list(&self, q: &ListQuery) -> Result<Vec<Item>, StoreError> {
        self.gate().await?;
        self.inner.list(q).await
    }
    async fn update(
        &self,
        id: Uuid,
        f: &NewItem,
        e: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError> {
        self.gate().await?;
        self.inner.update(id, f, e, now).await
    }
    async fn delete(&self, id: Uuid, e: Option<i64>) -> Result<WriteOutcome<()>, StoreError> {
        self.gate().await?;
        self.inner.delete(id, e).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.purge_idempotency_keys(before).await
    }
}

async fn spawn_faulty(
    b: Backend,
    tweak: impl FnOnce(&mut shipshape::config::Config),
) -> (TestApp, Arc<Faulty>) {
    let (url, dir) = crate::helpers::database_url(b).await;
    let mut config = test_config(&url);
    tweak(&mut config);
    let metrics = Arc::new(shipshape::metrics::Metrics::new());
    let storage = crate::helpers::connect(&config, &metrics).await;
    let faulty = Faulty::new(storage.items);
    let storage = Storage {
        items: faulty.clone(),
        pool: storage.pool,
    };
    let app = TestApp::spawn_storage(config, storage, metrics, dir).await;
    (app, faulty)
}

async fn probes_answer(b: Backend) {
    let app = TestApp::spawn(b).await;
    let h = app.get("/healthz").await;
    assert_eq!(h.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
}

async fn metrics_count_requests_by_route_template(b: Backend) {
    let app = TestApp::spawn(b).await;
    let created = app.create("m").await;
    app.get(&format!("/v1/items/{}", created["id"].as_str().unwrap()))
        .await;
    app.get("/v1/items/not-a-uuid").await;
    app.get("/some/scanner/path/12345").await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            r#"http_server_requests_total{method="POST",route="/v1/items",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"http_server_requests_total{method="GET",route="/v1/items/{id}",status="200"} 1"#
    ));
    assert!(text.contains(
        r#"http_server_requests_total{method="GET",route="/v1/items/{id}",status="400"} 1"#
    ));
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"} 1"#
        )
    );
    assert!(!text.contains("scanner"), "raw paths never become labels");
    assert!(text.contains("http_server_request_duration_seconds_bucket{le=\"0.0001\""));
    assert!(text.contains("shipshape_build_info{"));
    assert!(text.contains("shipshape_db_pool_max_connections 5"));
    assert!(text.trim_end().ends_with("# EOF"));
}

async fn openapi_describes_every_route(b: Backend) {
    let app = TestApp::spawn(b).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/v1/items", &["get", "post"][..]),
        ("/v1/items/{id}", &["get", "put", "patch", "delete"][..]),
        ("/healthz", &["get"][..]),
        ("/readyz", &["get"][..]),
        ("/metrics", &["get"][..]),
    ] {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path} documented");
        }
    }
    for schema in ["Item", "ItemInput", "ItemPage", "Problem", "FieldError"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let post = &paths["/v1/items"]["post"]["responses"];
    for status in ["201", "400", "413", "415", "422", "503"] {
        assert!(post[status].is_object(), "POST documents {status}");
    }
    let html = app.get("/docs/").await;
    assert_eq!(html.status(), 200);
    let body = html.text().await.unwrap();
    assert!(body.contains("swagger-ui"), "Swagger UI page");
    assert!(!body.contains("https://"), "no CDN assets: {body}");
    let js = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(js.status(), 200, "assets served from the binary");
}

async fn trace_context_is_honoured_and_returned(b: Backend) {
    let app = TestApp::spawn(b).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .client
        .get(app.url("/v1/items/not-a-uuid"))
        .header("traceparent", incoming)
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let tp = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !tp.contains("00f067aa0ba902b7"),
        "{tp}"
    );
    let body = assert_problem(r, 400).await;
    assert_eq!(body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let r = app
        .client
        .get(app.url("/nope"))
        .header("traceparent", "00-zzzz-bad-01")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_problem(r, 404).await;
    let r = app.get("/healthz").await;
    let a = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let r = app.get("/healthz").await;
    assert_ne!(
        r.headers()["x-trace-id"].to_str().unwrap(),
        a,
        "a new trace per request"
    );
}

/// Draining does not depend on the storage backend: SQLite only (the in-flight test wraps a
/// delayed store around it anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_draining() {
    let b = Backend::Sqlite;
    let app = TestApp::spawn(b).await;
    app.state.start_draining();
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "draining");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness unaffected"
    );
    assert_eq!(app.post_item(&item("still serving")).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let b = Backend::Sqlite;
    let (mut app, faulty) =
        spawn_faulty(b, |c| c.http.drain_delay = Duration::from_millis(300)).await;
    faulty.set_delay(Duration::from_millis(800));
    let mut in_flight = Vec::new();
    for i in 0..8 {
        let (client, url) = (app.client.clone(), app.url("/v1/items"));
        in_flight.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&item(&format!("in flight {i}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while draining");
    for t in in_flight {
        assert_eq!(t.await.unwrap().expect("accepted request completed"), 201);
    }
    done.await.unwrap().expect("clean shutdown");
    assert!(
        app.client.get(app.url("/healthz")).send().await.is_err(),
        "listener closed"
    );
}

async fn slow_requests_time_out_with_503(b: Backend) {
    let (app, faulty) =
        spawn_faulty(b, |c| c.http.request_timeout = Duration::from_millis(200)).await;
    faulty.set_delay(Duration::from_millis(600));
    let r = app.get("/v1/items").await;
    assert!(r.headers().contains_key("retry-after"));
    let p = assert_problem(r, 503).await;
    assert_eq!(p["type"], "urn:shipshape:problem:timeout");
    faulty.set_delay(Duration::ZERO);
    assert_eq!(app.get("/v1/items").await.status(), 200);
    let m = app.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains(r#"shipshape_requests_rejected_total{reason="timeout"} 1"#),
        "{m}"
    );
}

async fn excess_concurrency_is_shed_with_503(b: Backend) {
    let (app, faulty) = spawn_faulty(b, |c| c.http.max_concurrent_requests = 2).await;
    faulty.set_delay(Duration::from_millis(500));
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (client, url) = (app.client.clone(), app.url("/v1/items"));
        slow.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let shed = app.get("/v1/items").await;
    assert!(shed.headers().contains_key("retry-after"));
    let p = assert_problem(shed, 503).await;
    assert_eq!(p["type"], "urn:shipshape:problem:overloaded");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "probes are never shed"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
}

async fn database_outage_gives_503_and_recovers(b: Backend) {
    let (app, faulty) = spawn_faulty(b, |_| {}).await;
    let created = app.create("before outage").await;
    faulty.set_down(true);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);
    let p = assert_problem(app.post_item(&item("during")).await, 503).await;
    assert_eq!(p["type"], "urn:shipshape:problem:database-unavailable");
    faulty.set_down(false);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let got = app
        .get(&format!("/v1/items/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.status(), 200);
}
