//! Response hardening headers on every kind of response, and CORS (off by default, then an
//! allow-list).

use crate::helpers::{Backend, TestApp, call, jwt::bearer, token, with_auth};

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test]
async fn hardening_headers_are_on_every_response() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_auth(c);
        c.auth.public_reads = true;
        c.security.hsts = true;
    })
    .await;
    let writer = bearer(&token("w", &["items:write"]));
    let api_csp = "default-src 'none'; frame-ancestors 'none'";
    let cases: Vec<(reqwest::Response, bool)> = vec![
        (app.get("/v1/items").await, false),
        (call(&app, "POST", "/v1/items", Some(&writer)).await, false),
        (app.get("/v1/items/not-a-uuid").await, false),
        (app.get("/nowhere").await, false),
        (call(&app, "POST", "/v1/items", None).await, false),
        (
            call(&app, "DELETE", "/v1/items", Some(&writer)).await,
            false,
        ),
        (app.get("/healthz").await, false),
        (app.get("/metrics").await, false),
        (app.get("/openapi.json").await, false),
        (app.get("/docs/").await, true),
        (app.get("/docs/swagger-ui.css").await, true),
    ];
    for (r, docs) in cases {
        let what = format!("{} {}", r.url().path(), r.status());
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{what}");
        assert_eq!(
            header(&r, "strict-transport-security"),
            "max-age=31536000; includeSubDomains",
            "{what}"
        );
        assert!(r.headers().get("server").is_none(), "{what}: no banner");
        let csp = header(&r, "content-security-policy");
        if docs {
            assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
            assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
        } else {
            assert!(csp.starts_with(api_csp), "{what}: {csp}");
            assert_eq!(header(&r, "cache-control"), "no-store", "{what}");
        }
    }
    // HSTS is off by default.
    let plain = TestApp::spawn(Backend::Sqlite).await;
    assert!(
        plain
            .get("/v1/items")
            .await
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_allow_list() {
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/items"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let off = TestApp::spawn(Backend::Sqlite).await;
    let r = preflight(&off, "https://app.example.com").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = off
        .client
        .get(off.url("/v1/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let on = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_auth(c);
        c.security.cors_origins = vec!["https://app.example.com".parse().unwrap()];
    })
    .await;
    let r = preflight(&on, "https://app.example.com").await.unwrap();
    assert!(
        r.status().is_success(),
        "preflight needs no token: {}",
        r.status()
    );
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&r, "access-control-allow-headers").contains("authorization"));
    let r = preflight(&on, "https://evil.example.com").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let reader = bearer(&token("r", &["items:read"]));
    let r = on
        .client
        .get(on.url("/v1/items"))
        .header("origin", "https://app.example.com")
        .header("authorization", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&r, "access-control-expose-headers").contains("etag"));
}
