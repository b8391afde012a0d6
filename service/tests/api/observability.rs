//! Observability verified by its real consumers: promtool and a real Prometheus server scrape
//! the live `/metrics`, an in-process OTLP/HTTP receiver decodes the exported spans, and every
//! log line is parsed as JSON (and searched for secrets).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use prost::Message;
use serde_json::Value;

use crate::helpers::child::{Server, free_port};

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool, or `None` after a loud message; in CI (`CI=true`) a missing tool fails the test.
fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but `{name}` is not installed (Debian package prometheus)");
        }
        eprintln!("\n!!! SKIPPING: `{name}` not found (apt-get install prometheus) !!!\n");
    }
    found
}

/// `shipshape serve` on a free port and SQLite in `dir`, no drain delay, auth off, plus `env`;
/// ready when this returns.
async fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("SHIPSHAPE_HTTP__DRAIN_DELAY", "0s")];
    all.extend_from_slice(env);
    let db = format!("sqlite://{}/db.sqlite", dir.display());
    let mut server = Server::spawn(dir, &db, free_port(), &all);
    server.wait_ready(&reqwest::Client::new()).await;
    server
}

async fn traffic(server: &Server) {
    let c = reqwest::Client::new();
    for i in 0..20 {
        let r = c
            .post(server.url("/v1/items"))
            .json(&crate::helpers::item(&format!("m{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(c.get(server.url(&loc)).send().await.unwrap().status(), 200);
    }
    assert_eq!(
        c.get(server.url("/v1/items?limit=5"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(server.url("/v1/items/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(server.url("/wp-admin/x.php"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn promtool_accepts_the_live_scrape_in_both_formats() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]).await;
    traffic(&server).await;
    let c = reqwest::Client::new();
    for accept in [
        "text/plain;version=0.0.4",
        "application/openmetrics-text;version=1.0.0",
    ] {
        let r = c
            .get(server.url("/metrics"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        assert!(
            ct.starts_with(accept.split(';').next().unwrap()),
            "{accept} -> {ct}"
        );
        for name in [
            "http_server_requests_total",
            "http_server_request_duration_seconds_bucket",
            "http_server_requests_in_flight",
            "http_server_request_body_size_bytes_bucket",
            "http_server_response_body_size_bytes_bucket",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
            "shipshape_build_info",
            "shipshape_db_pool_connections",
            "shipshape_db_pool_acquire_duration_seconds_bucket",
        ] {
            assert!(body.contains(name), "{accept}: {name} missing");
        }
        if accept.starts_with("text/plain") {
            let mut child = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "promtool check metrics: exit {:?} {report}",
                out.status.code()
            );
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{report}"
            );
        }
    }
    server.stop();
}

#[tokio::test]
async fn a_real_prometheus_scrapes_and_answers_rate_and_quantile_queries() {
    let Some(prometheus) = require_tool("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]).await;
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shipshape\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.port
        ),
    )
    .unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = reqwest::Client::new();
    let query = |q: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await;
            match r {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let rate_q =
        r#"sum by (method, route, status) (rate(http_server_requests_total{job="shipshape"}[1m]))"#;
    let p95_q = r#"histogram_quantile(0.95, sum by (le, route) (rate(http_server_request_duration_seconds_bucket{job="shipshape", route="/v1/items"}[1m])))"#;
    let (rates, p95) = loop {
        traffic(&server).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let rates = query(rate_q).await;
        let p95 = query(p95_q).await;
        let has = |v: &Value, f: &dyn Fn(&Value) -> bool| {
            v["data"]["result"]
                .as_array()
                .is_some_and(|a| a.iter().any(f))
        };
        let ok_rates = has(&rates, &|s| {
            s["metric"]["route"] == "/v1/items"
                && s["metric"]["method"] == "POST"
                && s["metric"]["status"] == "201"
                && s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
        }) && has(&rates, &|s| {
            s["metric"]["route"] == "unmatched" && s["metric"]["status"] == "404"
        });
        let ok_p95 = has(&p95, &|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0 && v < 10.0)
        });
        if ok_rates && ok_p95 {
            break (rates, p95);
        }
        if Instant::now() > deadline {
            let _ = prom.kill();
            panic!("Prometheus never returned the expected series:\nrate: {rates}\np95: {p95}");
        }
    };
    let _ = prom.kill();
    let _ = prom.wait();
    let series: Vec<String> = rates["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}", s["metric"]))
        .collect();
    assert!(
        series.iter().all(|s| !s.contains("wp-admin")),
        "raw paths never become labels"
    );
    eprintln!("Prometheus rate() series: {}", series.join(" "));
    eprintln!(
        "Prometheus p95 for /v1/items: {}",
        p95["data"]["result"][0]["value"][1]
    );
    server.stop();
}

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn otlp_receiver() -> (u16, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(rx): State<Received>, body: Bytes| async move {
                let req = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                rx.lock().unwrap().push(req);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

// Multi-threaded: the receiver must keep answering while the test blocks on the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_parent_and_database_child() {
    let (port, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = start(dir.path(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;
    let c = reqwest::Client::new();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = c
        .get(server.url("/v1/items?limit=3"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("user-agent", "otlp-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-trace-id"], trace);
    let own = c.get(server.url("/healthz")).send().await.unwrap();
    let own_trace = own.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let lines = server.stop();

    let requests = received.lock().unwrap().clone();
    let mut spans: Vec<(Span, Vec<KeyValue>)> = Vec::new();
    for req in &requests {
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            assert_eq!(
                attr_str(&resource, "service.name").as_deref(),
                Some("shipshape")
            );
            assert_eq!(
                attr_str(&resource, "service.version").as_deref(),
                Some(env!("CARGO_PKG_VERSION"))
            );
            assert!(attr_str(&resource, "service.instance.id").is_some());
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    spans.push((s.clone(), resource.clone()));
                }
            }
        }
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server_span = spans
        .iter()
        .map(|(s, _)| s)
        .find(|s| hex(&s.trace_id) == trace && s.kind == 2)
        .unwrap_or_else(|| panic!("no server span for the trace; got {} spans", spans.len()));
    assert_eq!(server_span.name, "GET /v1/items");
    assert_eq!(
        hex(&server_span.parent_span_id),
        parent,
        "parent from traceparent"
    );
    assert_eq!(
        attr_str(&server_span.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "http.route").as_deref(),
        Some("/v1/items")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "url.path").as_deref(),
        Some("/v1/items")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "url.scheme").as_deref(),
        Some("http")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_str(&server_span.attributes, "user_agent.original").as_deref(),
        Some("otlp-test/1.0")
    );
    for own_field in ["trace_id", "span_id", "method", "route"] {
        assert_eq!(
            attr_str(&server_span.attributes, own_field),
            None,
            "{own_field}: log fields are not span attributes"
        );
    }
    let db_span = spans
        .iter()
        .map(|(s, _)| s)
        .find(|s| hex(&s.trace_id) == trace && s.parent_span_id == server_span.span_id)
        .expect("a database span under the server span");
    assert_eq!(db_span.name, "SELECT items");
    assert_eq!(db_span.kind, 3, "client span");
    assert_eq!(
        attr_str(&db_span.attributes, "db.system.name").as_deref(),
        Some("sqlite")
    );
    assert!(
        spans.iter().any(|(s, _)| hex(&s.trace_id) == own_trace),
        "X-Trace-ID of a request without traceparent is the exported trace id"
    );
    let logged = lines.iter().filter(|l| l.contains(trace)).count();
    assert!(logged >= 1, "the request log line carries the trace id");
    eprintln!(
        "OTLP: {} export requests, {} spans; server span {} with child {}",
        requests.len(),
        spans.len(),
        server_span.name,
        db_span.name
    );
}

/// A 5xx marks the server span ERROR; a 4xx is the client's and leaves the status unset (HTTP
/// semantic conventions). The 503 is `/readyz` while the instance drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_mark_the_span_and_client_errors_do_not() {
    let (port, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("SHIPSHAPE_HTTP__DRAIN_DELAY", "2s"),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let get = |path: &str, trace: &str| {
        c.get(server.url(path))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .send()
    };
    let client_error = "7bf92f3577b34da6a3ce929d0e0e4736";
    let server_error = "8bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        get("/no/such/path", client_error).await.unwrap().status(),
        404
    );
    server.signal("TERM");
    // Draining: /readyz answers 503 at once, and the server keeps serving for drain_delay.
    let mut status = 0;
    for _ in 0..50 {
        status = get("/readyz", server_error)
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "/readyz while draining");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // The /readyz polls share one trace id, and the first may be answered 200 before the
    // signal is handled: pick the server span of the trace that carries the expected status.
    let server_span = |trace: &str, status: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .find(|s| {
                hex(&s.trace_id) == trace
                    && s.kind == 2
                    && attr_str(&s.attributes, "http.response.status_code").as_deref()
                        == Some(status)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no server span for {trace} with status {status}"))
    };
    let span = server_span(server_error, "503");
    assert_eq!(span.status.map(|s| s.code), Some(2), "STATUS_CODE_ERROR");
    let span = server_span(client_error, "404");
    assert_eq!(span.status.map_or(0, |s| s.code), 0, "STATUS_CODE_UNSET");
}

/// `telemetry.sample_ratio = 0`: new traces are not exported, but the caller's sampling
/// decision in `traceparent` is followed (ParentBased), and the response says which it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_follows_the_ratio_and_the_parent() {
    let (port, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("SHIPSHAPE_TELEMETRY__SAMPLE_RATIO", "0"),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let sampled = "5bf92f3577b34da6a3ce929d0e0e4736";
    let unsampled = "6bf92f3577b34da6a3ce929d0e0e4736";
    let mut own = Vec::new();
    for _ in 0..20 {
        let r = c.get(server.url("/v1/items?limit=1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let tp = r.headers()["traceparent"].to_str().unwrap().to_owned();
        assert!(tp.ends_with("-00"), "not sampled: {tp}");
        own.push(r.headers()["x-trace-id"].to_str().unwrap().to_owned());
    }
    for (trace, flags) in [(sampled, "01"), (unsampled, "00")] {
        let r = c
            .get(server.url("/v1/items?limit=1"))
            .header(
                "traceparent",
                format!("00-{trace}-00f067aa0ba902b7-{flags}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let tp = r.headers()["traceparent"].to_str().unwrap().to_owned();
        assert!(tp.starts_with(&format!("00-{trace}-")) && tp.ends_with(&format!("-{flags}")));
    }
    server.stop();

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let traces: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|req| req.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter())
        .map(|s| hex(&s.trace_id))
        .collect();
    assert!(
        traces.iter().any(|t| t == sampled),
        "a sampled parent is exported"
    );
    assert!(
        !traces.iter().any(|t| t == unsampled),
        "an unsampled parent is not"
    );
    assert!(
        !traces.iter().any(|t| own.contains(t)),
        "no new trace is exported at ratio 0"
    );
    // Nothing else either: the database spans of unsampled requests must not leak out as
    // root spans of traces of their own.
    assert!(
        traces.iter().all(|t| t == sampled),
        "only the sampled trace is exported, got {traces:?}"
    );
}

#[tokio::test]
async fn every_log_line_is_json_with_request_fields_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let password = "pg-pass-Zx81";
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2ctdGVzdCJ9.c2VjcmV0LXNpZ25hdHVyZQ";
    if crate::helpers::pg::skip_without_postgres() {
        return;
    }
    // The test cluster trusts local connections, so the password is accepted and ignored:
    // it is there to be kept out of every log line.
    let url = crate::helpers::pg::fresh_database().await.replacen(
        "postgres@",
        &format!("postgres:{password}@"),
        1,
    );
    let secret_file = dir.path().join("db-url");
    std::fs::write(&secret_file, format!("{url}\n")).unwrap();
    let url_ref = format!("file:{}", secret_file.display());
    let server = start(
        dir.path(),
        &[
            ("SHIPSHAPE_DATABASE__URL", &url_ref),
            ("SHIPSHAPE_LOG__LEVEL", "debug"),
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let r = c
        .post(server.url("/v1/items"))
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", format!("session={token}"))
        .header("user-agent", "log-test/1.0")
        .header("x-request-id", "log-req-1")
        .json(&crate::helpers::item("logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let lines = server.stop();
    assert!(lines.len() > 5);
    let mut completed = None;
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(),
            "{line}"
        );
        if v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("shipshape"))
        {
            assert!(v["message"].is_string(), "{line}");
        }
        assert!(!line.contains(password), "database password logged: {line}");
        assert!(!line.contains(token), "bearer token logged: {line}");
        if v["message"] == "request completed" && v["path"] == "/v1/items" {
            completed = Some(v);
        }
    }
    let v = completed.expect("a request completed line");
    assert_eq!(v["span"]["trace_id"], trace.as_str());
    assert_eq!(v["span"]["span_id"].as_str().map(str::len), Some(16));
    assert_eq!(v["span"]["method"], "POST");
    assert_eq!(v["span"]["route"], "/v1/items");
    assert_eq!(v["status"], 201);
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["request_size"].as_u64().unwrap() > 0);
    assert!(v["response_size"].as_u64().unwrap() > 0);
    assert!(v["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(v["user_agent"], "log-test/1.0");
    assert_eq!(v["request_id"], "log-req-1");
    let start = lines
        .iter()
        .find(|l| l.contains("\"message\":\"starting\""))
        .expect("start-up line");
    assert!(
        start.contains("postgres:***@"),
        "effective config logged, redacted: {start}"
    );
    // The shutdown phases are process.rs's `sigterm_under_load_drops_nothing_and_exits_0`.
}
