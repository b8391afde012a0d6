//! The handlers without a port: `shipshape::http::router` driven through
//! `tower::ServiceExt::oneshot` on SQLite in a temp dir. Quick to run and to debug (no
//! listener, no client, no server task); the other modules cover what only a socket shows.

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shipshape::config::Config;
use tower::ServiceExt;

use crate::helpers::{Backend, database_url, item, router_for, test_config, token, with_auth};

/// The router and the temp dir that holds its database.
struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

/// A response, read to the end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an RFC 9457 problem+json answer with `status` and returns its body.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            "application/problem+json"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "{body}");
        for key in ["type", "title", "detail"] {
            assert!(body[key].is_string(), "problem has {key}: {body}");
        }
        let trace = self.headers.get("x-trace-id").and_then(|v| v.to_str().ok());
        assert!(trace.is_some(), "x-trace-id header");
        assert_eq!(
            body["trace_id"].as_str(),
            trace,
            "trace id in body = header"
        );
        body
    }
}

impl App {
    async fn new(tweak: impl FnOnce(&mut Config)) -> App {
        let (url, dir) = database_url(Backend::Sqlite).await;
        let mut config = test_config(&url);
        tweak(&mut config);
        App {
            router: router_for(config).await,
            _dir: dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let r = self.router.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = r.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> Answer {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn probes_answer_json() {
    let app = App::new(|_| {}).await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header(header::CONTENT_TYPE), "application/json", "{path}");
        assert_eq!(r.json()["status"], status, "{path}");
    }
}

#[tokio::test]
async fn openapi_json_describes_the_items_routes() {
    let app = App::new(|_| {}).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header(header::CONTENT_TYPE)
            .starts_with("application/json"),
        "{}",
        r.header(header::CONTENT_TYPE)
    );
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert!(doc["paths"]["/v1/items"]["post"].is_object());
    assert!(doc["paths"]["/v1/items/{id}"]["get"].is_object());
}

#[tokio::test]
async fn create_get_and_list_an_item() {
    let app = App::new(|_| {}).await;
    let r = app.post_json("/v1/items", &item("Teapot")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header(header::CONTENT_TYPE), "application/json");
    assert_eq!(r.header(header::ETAG), "\"1\"");
    let created = r.json();
    let id = created["id"].as_str().unwrap();
    let location = r.header(header::LOCATION).to_owned();
    assert_eq!(location, format!("/v1/items/{id}"));
    assert_eq!(created["name"], "Teapot");
    assert_eq!(created["price"], 19.99);
    assert_eq!(created["quantity"], 3);
    assert_eq!(created["tags"], json!(["test", "kitchen"]));
    assert_eq!(created["version"], 1);

    let r = app.get(&location).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::ETAG), "\"1\"");
    assert_eq!(r.json(), created);

    let r = app.get("/v1/items").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_TYPE), "application/json");
    let page = r.json();
    assert_eq!(page["items"], json!([created]));
    assert!(page["next_cursor"].is_null(), "{page}");
}

#[tokio::test]
async fn errors_are_problem_json() {
    let app = App::new(|_| {}).await;
    let p = app.get("/nowhere").await.problem(404);
    assert_eq!(p["type"], "urn:shipshape:problem:not-found", "{p}");
    let missing = uuid::Uuid::now_v7();
    app.get(&format!("/v1/items/{missing}")).await.problem(404);

    let r = app
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/v1/items")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let allow = r.header(header::ALLOW).to_owned();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    assert_eq!(
        r.problem(405)["type"],
        "urn:shipshape:problem:method-not-allowed"
    );

    let mut big = item("big");
    big["description"] = json!("x".repeat(70 * 1024));
    let p = app.post_json("/v1/items", &big).await.problem(413);
    assert_eq!(p["type"], "urn:shipshape:problem:payload-too-large");

    let r = app
        .send(
            Request::post("/v1/items")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(item("ct").to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.problem(415)["type"],
        "urn:shipshape:problem:unsupported-media-type"
    );

    let bad = json!({"name": "   ", "price": 0.001, "quantity": -1});
    let p = app.post_json("/v1/items", &bad).await.problem(422);
    assert_eq!(p["type"], "urn:shipshape:problem:validation");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "price", "quantity"], "{p}");

    // Nothing was stored by any of them.
    assert_eq!(app.get("/v1/items").await.json()["items"], json!([]));
}

#[tokio::test]
async fn auth_on_answers_401_with_a_bearer_challenge() {
    let app = App::new(with_auth).await;
    let r = app.get("/v1/items").await;
    assert_eq!(
        r.header(header::WWW_AUTHENTICATE),
        r#"Bearer realm="shipshape""#
    );
    let p = r.problem(401);
    assert_eq!(p["type"], "urn:shipshape:problem:unauthorized", "{p}");

    let r = app
        .send(
            Request::get("/v1/items")
                .header(header::AUTHORIZATION, "Bearer not.a.jwt")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        r.header(header::WWW_AUTHENTICATE)
            .starts_with(r#"Bearer realm="shipshape", error="invalid_token""#),
        "{}",
        r.header(header::WWW_AUTHENTICATE)
    );
    r.problem(401);

    let reader = format!("Bearer {}", token("reader", &["items:read"]));
    let r = app
        .send(
            Request::get("/v1/items")
                .header(header::AUTHORIZATION, reader)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["items"], json!([]));
    // Probes need no token.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}
