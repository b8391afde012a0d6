//! Rate limiting over real HTTP: 429 with `Retry-After` and `RateLimit` headers, probes exempt,
//! buckets per subject or per client IP (`X-Forwarded-For` only from trusted proxies), and
//! many concurrent clients.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    Backend, TestApp, assert_problem, call, item, jwt::bearer, rejected, token, with_auth,
};

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_exempts_probes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_second = 1;
        c.rate_limit.burst = 3;
    })
    .await;
    for left in ["2", "1", "0"] {
        let r = app.get("/v1/items").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=3;w=3");
        assert!(
            r.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"default\";r={left};t=")),
            "{:?}",
            r.headers()["ratelimit"]
        );
    }
    let r = app.get("/v1/items").await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=3;w=3");
    assert_eq!(
        r.headers()["ratelimit"],
        format!("\"default\";r=0;t={retry}").as_str()
    );
    let body = assert_problem(r, 429).await;
    assert_eq!(body["type"], "urn:shipshape:problem:rate-limited");
    // Docs and unknown paths count too; probes and metrics never do.
    assert_eq!(app.get("/openapi.json").await.status(), 429);
    for _ in 0..20 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(app.get(path).await.status(), 200, "{path}");
        }
    }
    assert!(rejected(&app, "rate_limited").await >= 2);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("/v1/items").await.status(), 200);
}

#[tokio::test]
async fn rate_limit_keys_by_subject_and_by_trusted_forwarded_ip() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_auth(c);
        c.rate_limit.enabled = true;
        c.rate_limit.per_second = 1;
        c.rate_limit.burst = 2;
        c.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let alice = bearer(&token("alice", &["items:read"]));
    let bob = bearer(&token("bob", &["items:read"]));
    for _ in 0..2 {
        assert_eq!(
            call(&app, "GET", "/v1/items", Some(&alice)).await.status(),
            200
        );
    }
    assert_eq!(
        call(&app, "GET", "/v1/items", Some(&alice)).await.status(),
        429
    );
    assert_eq!(
        call(&app, "GET", "/v1/items", Some(&bob)).await.status(),
        200,
        "own bucket"
    );
    // Anonymous clients behind the trusted proxy (loopback) are told apart by X-Forwarded-For.
    let anon = |ip: &'static str| {
        app.client
            .get(app.url("/v1/items"))
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(anon("198.51.100.1").await.unwrap().status(), 401);
    }
    assert_eq!(
        anon("198.51.100.1").await.unwrap().status(),
        429,
        "failed auth is rate limited too"
    );
    assert_eq!(
        anon("198.51.100.2").await.unwrap().status(),
        401,
        "another client"
    );
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_second = 1;
        c.rate_limit.burst = 2;
    })
    .await;
    for i in 0..3 {
        let r = app
            .client
            .get(app.url("/v1/items"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if i < 2 { 200 } else { 429 }, "spoofed hop {i}");
    }
}

#[tokio::test]
async fn many_concurrent_clients_past_the_rate_limit_get_clean_429s() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_second = 5;
        c.rate_limit.burst = 10;
        c.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let sentinel = app.create("sentinel").await;
    let mut tasks = Vec::new();
    for client in 0..40u32 {
        let (http, url) = (app.client.clone(), app.url("/v1/items"));
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..15 {
                // Half the clients share one address, the other half have their own.
                let ip = if client % 2 == 0 { 1 } else { client + 10 };
                let req = if n % 3 == 0 {
                    http.post(&url).json(&item(&format!("c{client}-{n}")))
                } else {
                    http.get(&url)
                };
                let r = req
                    .header("x-forwarded-for", format!("192.0.2.{ip}"))
                    .send()
                    .await
                    .expect("response");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        for s in t.await.unwrap() {
            *counts.entry(s).or_default() += 1;
        }
    }
    eprintln!("statuses under load: {counts:?}");
    assert!(
        counts.keys().all(|s| matches!(s, 200 | 201 | 429)),
        "{counts:?}"
    );
    assert!(counts.get(&429).copied().unwrap_or(0) > 100, "{counts:?}");
    assert!(counts.get(&201).copied().unwrap_or(0) >= 20, "{counts:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = app
        .get(&format!("/v1/items/{}", sentinel["id"].as_str().unwrap()))
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), sentinel, "data intact");
}
