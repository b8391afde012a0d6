//! Security controls over real HTTP: JWT authentication and scopes, rate limiting, response
//! hardening, CORS, slow and idle clients, and a suite of hostile inputs (issue 4).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use crate::helpers::{
    Backend, TEST_SECRET, TestApp, assert_problem, child::run, item, token, with_auth,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use shipshape::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs `claims` with `alg` and a PEM private key fixture (or the raw secret for HS*).
fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn pem_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(file)).expect("fixture");
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => panic!("{alg:?}"),
    }
    .expect("key")
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes()).expect("secret")
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "scope": scope, "iat": now(), "exp": now() + 600})
}

/// `header.payload.` with `alg: none` and no signature.
fn alg_none_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

async fn call(app: &TestApp, method: &str, path: &str, auth: Option<&str>) -> reqwest::Response {
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

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn www_auth(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn rejected(app: &TestApp, reason: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let needle = format!("shipshape_requests_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Asserts a 401 with an `invalid_token` challenge (or a bare one for a missing token).
async fn assert_401(r: reqwest::Response, missing: bool, what: &str) {
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

#[tokio::test]
async fn invalid_tokens_get_401_with_an_rfc6750_challenge() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_auth(c);
        c.auth.issuer = "https://issuer.test".into();
        c.auth.audience = "shipshape-api".into();
    })
    .await;
    let good = |extra: Value| {
        let mut c = json!({"sub": "alice", "scope": "items:read items:write",
            "iss": "https://issuer.test", "aud": "shipshape-api", "exp": now() + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign(Algorithm::HS256, &hs(TEST_SECRET), None, &c)
    };
    // The control: a correct token works.
    let r = call(&app, "GET", "/v1/items", Some(&bearer(&good(json!({}))))).await;
    assert_eq!(r.status(), 200);

    let r = call(&app, "GET", "/v1/items", None).await;
    assert_401(r, true, "missing").await;

    let rsa_public = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("basic scheme", "Basic YWxpY2U6c2VjcmV0".into()),
        ("empty bearer", "Bearer ".into()),
        ("not a jwt", "Bearer not.a.jwt".into()),
        ("two parts", "Bearer abc.def".into()),
        ("binary garbage", "Bearer %%%%.####.$$$$".into()),
        ("expired", bearer(&good(json!({"exp": now() - 3600})))),
        (
            "nbf in the future",
            bearer(&good(json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong issuer",
            bearer(&good(json!({"iss": "https://evil.test"}))),
        ),
        ("no issuer", bearer(&good(json!({"iss": null})))),
        ("wrong audience", bearer(&good(json!({"aud": "other-api"})))),
        ("no exp", bearer(&good(json!({"exp": null})))),
        ("no sub", bearer(&good(json!({"sub": null})))),
        (
            "exp not a number",
            bearer(&good(json!({"exp": "tomorrow"}))),
        ),
        (
            "alg none",
            bearer(&alg_none_token(
                &json!({"sub": "alice", "scope": "items:write",
                "iss": "https://issuer.test", "aud": "shipshape-api", "exp": now() + 600}),
            )),
        ),
        (
            "wrong secret",
            bearer(&sign(
                Algorithm::HS256,
                &hs("another-secret-another-secret-another-secret"),
                None,
                &claims("alice", "items:write"),
            )),
        ),
        (
            "HS512 with the right secret (algorithm not pinned)",
            bearer(&sign(
                Algorithm::HS512,
                &hs(TEST_SECRET),
                None,
                &json!({"sub": "alice", "scope": "items:write", "iss": "https://issuer.test",
                    "aud": "shipshape-api", "exp": now() + 600}),
            )),
        ),
        (
            "RS256 signed token against an HS256 config",
            bearer(&sign(
                Algorithm::RS256,
                &pem_key(Algorithm::RS256, "rsa-private.pem"),
                None,
                &claims("alice", "items:write"),
            )),
        ),
        (
            "HS256 keyed with the public key",
            bearer(&sign(
                Algorithm::HS256,
                &hs(&rsa_public),
                None,
                &claims("alice", "items:write"),
            )),
        ),
        ("oversized token", bearer(&"a".repeat(9000))),
    ];
    let before = rejected(&app, "auth").await;
    for (what, header) in &cases {
        for method in ["GET", "POST"] {
            let r = call(&app, method, "/v1/items", Some(header)).await;
            assert_401(r, false, &format!("{what} ({method})")).await;
        }
    }
    let after = rejected(&app, "auth").await;
    assert_eq!(
        after - before,
        2 * cases.len() as u64,
        "auth rejections counted"
    );
    // Nothing was written by any rejected request.
    let list: Value = call(&app, "GET", "/v1/items", Some(&bearer(&good(json!({})))))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn scopes_decide_reads_and_writes() {
    let app = TestApp::spawn_with(Backend::Sqlite, with_auth).await;
    let reader = bearer(&token("reader", &["items:read"]));
    let writer = bearer(&token("writer", &["items:write"]));
    let both = bearer(&token("admin", &["items:read", "items:write"]));

    let r = call(&app, "POST", "/v1/items", Some(&writer)).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("/v1/items/{id}");

    assert_eq!(
        call(&app, "GET", "/v1/items", Some(&reader)).await.status(),
        200
    );
    assert_eq!(call(&app, "GET", &one, Some(&reader)).await.status(), 200);
    assert_eq!(call(&app, "HEAD", &one, Some(&reader)).await.status(), 200);
    for (method, path) in [
        ("POST", "/v1/items"),
        ("PUT", one.as_str()),
        ("DELETE", one.as_str()),
    ] {
        let r = call(&app, method, path, Some(&reader)).await;
        let challenge = www_auth(&r);
        assert!(
            challenge.contains(r#"error="insufficient_scope""#),
            "{challenge}"
        );
        assert!(challenge.contains(r#"scope="items:write""#), "{challenge}");
        let body = assert_problem(r, 403).await;
        assert_eq!(body["type"], "urn:shipshape:problem:insufficient-scope");
    }
    let r = call(&app, "GET", &one, Some(&writer)).await;
    assert!(www_auth(&r).contains(r#"scope="items:read""#));
    assert_problem(r, 403).await;
    assert_eq!(call(&app, "DELETE", &one, Some(&both)).await.status(), 204);
    // Scopes are whole words: `items:readwrite` or `items` grant nothing.
    let odd = bearer(&token("odd", &["items:readwrite", "items"]));
    assert_eq!(
        call(&app, "GET", "/v1/items", Some(&odd)).await.status(),
        403
    );
}

#[tokio::test]
async fn public_reads_let_anonymous_clients_read_only() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        with_auth(c);
        c.auth.public_reads = true;
    })
    .await;
    assert_eq!(call(&app, "GET", "/v1/items", None).await.status(), 200);
    assert_401(
        call(&app, "POST", "/v1/items", None).await,
        true,
        "anonymous write",
    )
    .await;
    // A token, if sent, must be valid even for reads.
    let r = call(&app, "GET", "/v1/items", Some("Bearer forged.token.here")).await;
    assert_401(r, false, "bad token on a public read").await;
    let writer = bearer(&token("w", &["items:write"]));
    assert_eq!(
        call(&app, "POST", "/v1/items", Some(&writer))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn operational_routes_stay_public() {
    let app = TestApp::spawn_with(Backend::Sqlite, with_auth).await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // Unknown paths under /v1 need a token too (no route discovery without one).
    assert_401(app.get("/v1/secrets").await, true, "unknown /v1 path").await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let create = &doc["paths"]["/v1/items"]["post"];
    assert_eq!(create["security"], json!([{"bearer": ["items:write"]}]));
    for status in ["401", "403"] {
        assert!(
            create["responses"][status].is_object(),
            "{status} documented"
        );
    }
    assert_eq!(
        doc["paths"]["/v1/items"]["get"]["security"],
        json!([{"bearer": ["items:read"]}])
    );
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
}

/// Tokens signed with each asymmetric key type are verified with the configured public key,
/// and a token signed with any other key, or claiming another algorithm, is not.
#[tokio::test]
async fn public_key_configs_verify_their_algorithm_only() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
        (Algorithm::EdDSA, "ed-private.pem", "ed-public.pem"),
    ] {
        let public_file = fixture(public);
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.auth.enabled = true;
            c.auth.public_key_file = public_file.clone();
        })
        .await;
        let good = sign(
            alg,
            &pem_key(alg, private),
            None,
            &claims("svc", "items:read"),
        );
        let r = call(&app, "GET", "/v1/items", Some(&bearer(&good))).await;
        assert_eq!(r.status(), 200, "{alg:?}");

        let public_pem = std::fs::read_to_string(&public_file).unwrap();
        let wrong_key = if alg == Algorithm::RS256 {
            sign(
                alg,
                &pem_key(alg, "rsa2-private.pem"),
                None,
                &claims("svc", "items:read"),
            )
        } else {
            sign(
                Algorithm::RS256,
                &pem_key(Algorithm::RS256, "rsa-private.pem"),
                None,
                &claims("svc", "items:read"),
            )
        };
        for (what, t) in [
            (
                "HS256 keyed with the public key (confusion)",
                sign(
                    Algorithm::HS256,
                    &hs(&public_pem),
                    None,
                    &claims("svc", "items:read"),
                ),
            ),
            ("HS256 with the test secret", token("svc", &["items:read"])),
            ("wrong key", wrong_key),
            ("alg none", alg_none_token(&claims("svc", "items:read"))),
        ] {
            let r = call(&app, "GET", "/v1/items", Some(&bearer(&t))).await;
            assert_401(r, false, &format!("{alg:?}: {what}")).await;
        }
    }
}

#[tokio::test]
async fn jwks_selects_the_key_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = pem_key(Algorithm::RS256, "rsa-private.pem");
    let k2 = pem_key(Algorithm::RS256, "rsa2-private.pem");
    let k3 = pem_key(Algorithm::ES256, "ec-private.pem");
    let mut keys = Vec::new();
    for (kid, key, alg) in [
        ("k1", &k1, Algorithm::RS256),
        ("k2", &k2, Algorithm::RS256),
        ("k3", &k3, Algorithm::ES256),
    ] {
        let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        keys.push(serde_json::to_value(&jwk).unwrap());
    }
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": keys}).to_string()).unwrap();
    let text = std::fs::read_to_string(&jwks).unwrap();
    assert!(!text.contains("\"d\""), "the JWKS holds public keys only");
    let path = jwks.display().to_string();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.auth.enabled = true;
        c.auth.jwks_file = path;
    })
    .await;
    let c = claims("svc", "items:read");
    for (kid, key, alg) in [
        ("k1", &k1, Algorithm::RS256),
        ("k2", &k2, Algorithm::RS256),
        ("k3", &k3, Algorithm::ES256),
    ] {
        let r = call(
            &app,
            "GET",
            "/v1/items",
            Some(&bearer(&sign(alg, key, Some(kid), &c))),
        )
        .await;
        assert_eq!(r.status(), 200, "{kid}");
    }
    for (what, t) in [
        (
            "kid of another key",
            sign(Algorithm::RS256, &k2, Some("k1"), &c),
        ),
        ("unknown kid", sign(Algorithm::RS256, &k1, Some("k9"), &c)),
        (
            "no kid with several keys",
            sign(Algorithm::RS256, &k1, None, &c),
        ),
        (
            "EC kid with an RSA signature",
            sign(Algorithm::RS256, &k1, Some("k3"), &c),
        ),
        (
            "RSA kid, HS256 keyed with garbage",
            sign(Algorithm::HS256, &hs("k1"), Some("k1"), &c),
        ),
    ] {
        let r = call(&app, "GET", "/v1/items", Some(&bearer(&t))).await;
        assert_401(r, false, what).await;
    }
}

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
        c.rate_limit.trusted_proxies = vec!["127.0.0.1".into()];
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
        c.rate_limit.trusted_proxies = vec!["127.0.0.0/8".into()];
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
        c.security.cors_origins = vec!["https://app.example.com".into()];
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

/// Sends raw bytes and returns what the server answered until it closed the connection (or
/// `limit` passed), and whether it closed.
async fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> (String, bool) {
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

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.idle_timeout = Duration::from_secs(1);
        c.http.header_read_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // A keep-alive connection that goes quiet after one request: closed by idle_timeout
    // (before hyper's header_read_timeout would).
    let start = std::time::Instant::now();
    let (answer, closed) = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_secs(6),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "idle keep-alive connection closed");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // A client that connects and sends nothing.
    let (_, closed) = raw_exchange(&addr, b"", Duration::from_secs(6)).await;
    assert!(closed, "silent client disconnected");
    // A client that drips its request head (never idle, never done): header_read_timeout.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = std::time::Instant::now();
    let mut closed_after = None;
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
        .take(100)
    {
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
            _ => {}
        }
    }
    let t = closed_after.expect("slowloris client was disconnected");
    assert!(
        t >= Duration::from_millis(2500) && t < Duration::from_secs(6),
        "{t:?}"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout = Duration::from_secs(2);
        // Long: only the early close of idle connections under pressure can free a slot here.
        c.http.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Two silent connections hold both slots ...
    let _a = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a third is not served until one of them is closed to make room: every slot is
    // taken, so connections idle for a second are closed (not after the 30 s idle timeout).
    let start = std::time::Instant::now();
    let (answer, _) = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "waited for a slot: {:?}",
        start.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// The real binary: configuration errors and `shipshape token`.

#[test]
fn auth_and_rate_limit_config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = fixture("nope.pem");
    let private = fixture("rsa-private.pem");
    /// (environment, what the error line must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            vec![("SHIPSHAPE_AUTH__HS256_SECRET", "short")],
            &["auth.hs256_secret", "32 bytes"],
        ),
        (
            vec![("SHIPSHAPE_AUTH__PUBLIC_KEY_FILE", &missing)],
            &["auth.public_key_file", "nope.pem"],
        ),
        (
            vec![("SHIPSHAPE_AUTH__PUBLIC_KEY_FILE", &private)],
            &["auth.public_key_file", "private key"],
        ),
        (
            vec![
                ("SHIPSHAPE_AUTH__ENABLED", "false"),
                ("SHIPSHAPE_AUTH__LEEWAY", "1h"),
            ],
            &["auth.leeway"],
        ),
        (
            vec![
                ("SHIPSHAPE_AUTH__ENABLED", "false"),
                ("SHIPSHAPE_RATE_LIMIT__PER_SECOND", "0"),
            ],
            &["rate_limit.per_second"],
        ),
        (
            vec![
                ("SHIPSHAPE_AUTH__ENABLED", "false"),
                ("SHIPSHAPE_RATE_LIMIT__TRUSTED_PROXIES", "[\"10.0.0.0/99\"]"),
            ],
            &["rate_limit.trusted_proxies"],
        ),
        (
            vec![
                ("SHIPSHAPE_AUTH__ENABLED", "false"),
                ("SHIPSHAPE_SECURITY__CORS_ORIGINS", "[\"*\"]"),
            ],
            &["security.cors_origins"],
        ),
        (
            vec![
                ("SHIPSHAPE_AUTH__ENABLED", "false"),
                ("SHIPSHAPE_AUTH__ISSUERR", "x"),
            ],
            &["auth.issuerr"],
        ),
    ];
    for (env, needles) in cases {
        let out = run(dir.path(), &["config"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{env:?}: {stderr:?} should name {n}");
        }
        assert!(!stderr.contains("short"), "secret not echoed");
    }
    // Serving with auth on and no key stops at start, and says how to give one.
    let out = run(dir.path(), &["serve"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for n in [
        "`auth`",
        "no key is configured",
        "auth.hs256_secret",
        "--ephemeral-key",
        "SHIPSHAPE_AUTH__ENABLED",
    ] {
        assert!(stderr.contains(n), "{stderr:?} should name {n}");
    }
}

#[test]
fn token_command_mints_a_token_the_service_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{TEST_SECRET}\n")).unwrap();
    let secret = format!("file:{}", secret_file.display());
    let env = [
        ("SHIPSHAPE_AUTH__HS256_SECRET", secret.as_str()),
        ("SHIPSHAPE_AUTH__ISSUER", "local"),
    ];
    let out = run(
        dir.path(),
        &[
            "token",
            "--sub",
            "ci",
            "--scope",
            "items:read",
            "--scope",
            "items:write",
            "--ttl",
            "5m",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cfg = shipshape::config::AuthConfig {
        hs256_secret: shipshape::config::Secret::new(TEST_SECRET),
        issuer: "local".into(),
        ..Default::default()
    };
    let verifier = shipshape::auth::Verifier::from_config(&cfg)
        .unwrap()
        .unwrap();
    let p = verifier.verify(&token).expect("valid token");
    assert_eq!(p.subject, "ci");
    assert_eq!(p.scopes, ["items:read", "items:write"]);
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let ttl = payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap();
    assert_eq!(ttl, 300);
    assert_eq!(payload["iss"], "local");

    let out = run(
        dir.path(),
        &["token", "--sub", "ci"],
        &[("SHIPSHAPE_AUTH__ENABLED", "false")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("auth.hs256_secret"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

// ------------------------------------------------------------------------------------------
// Hostile inputs: every one gets a clean 4xx (problem+json), and stored data stays intact.

on_both_backends!(hostile_inputs_get_clean_4xx_and_data_stays_intact);

static HOSTILE_CASES: AtomicUsize = AtomicUsize::new(0);

struct Hostile<'a> {
    app: &'a TestApp,
    auth: String,
    tried: usize,
}

impl Hostile<'_> {
    /// Sends `req` (with the write token unless it has its own `authorization`) and asserts
    /// a 4xx problem+json in `allowed`.
    async fn expect(&mut self, what: &str, req: reqwest::RequestBuilder, allowed: &[u16]) {
        self.tried += 1;
        let req = req.build().unwrap();
        let mut req = req;
        if !req.headers().contains_key("authorization") {
            req.headers_mut()
                .insert("authorization", self.auth.parse().unwrap());
        }
        let r = self
            .app
            .client
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        assert!(
            allowed.contains(&status),
            "{what}: got {status}, want one of {allowed:?}"
        );
        assert_problem(r, status).await;
    }

    /// Sends raw bytes on a fresh connection; the answer must be a 4xx (or a closed
    /// connection for input hyper refuses before any response can be made).
    async fn raw(&mut self, what: &str, bytes: Vec<u8>, allowed: &[u16]) {
        self.tried += 1;
        let addr = self.app.base.trim_start_matches("http://").to_owned();
        let (answer, _) = raw_exchange(&addr, &bytes, Duration::from_secs(5)).await;
        let status: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no HTTP answer: {answer:?}"));
        assert!(allowed.contains(&status), "{what}: got {status}: {answer}");
    }
}

async fn hostile_inputs_get_clean_4xx_and_data_stays_intact(b: Backend) {
    let app = TestApp::spawn_with(b, |c: &mut Config| {
        with_auth(c);
        c.rate_limit.enabled = true;
        c.rate_limit.per_second = 10_000;
        c.rate_limit.burst = 10_000;
    })
    .await;
    let auth = bearer(&token("tester", &["items:read", "items:write"]));
    let client = &app.client;
    let post = |body: Vec<u8>| {
        client
            .post(app.url("/v1/items"))
            .header("content-type", "application/json")
            .body(body)
    };
    // Known data to check afterwards.
    let mut stored = Vec::new();
    for name in ["alpha", "beta"] {
        let r = client
            .post(app.url("/v1/items"))
            .header("authorization", &auth)
            .json(&item(name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        stored.push(r.json::<Value>().await.unwrap());
    }
    let id = stored[0]["id"].as_str().unwrap().to_owned();
    let one = app.url(&format!("/v1/items/{id}"));
    let mut h = Hostile {
        app: &app,
        auth: auth.clone(),
        tried: 0,
    };

    // Sizes.
    let limit = app.state.config.http.body_limit;
    let big = json!({"name": "x", "description": "d".repeat(limit), "price": 1, "quantity": 1});
    h.expect(
        "oversized body",
        post(serde_json::to_vec(&big).unwrap()),
        &[413],
    )
    .await;
    h.raw(
        "oversized body, chunked",
        {
            let mut r = format!(
                "POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n"
            );
            for _ in 0..100 {
                r.push_str(&format!("1000\r\n{}\r\n", " ".repeat(4096)));
            }
            r.push_str("0\r\n\r\n");
            r.into_bytes()
        },
        &[413],
    )
    .await;
    h.raw(
        "oversized header block",
        format!(
            "GET /v1/items HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(80 * 1024)
        )
        .into_bytes(),
        &[431, 400],
    )
    .await;
    h.raw(
        "thousands of headers",
        {
            let mut s = String::from("GET /v1/items HTTP/1.1\r\nHost: x\r\n");
            for i in 0..500 {
                s.push_str(&format!("X-H{i}: v\r\n"));
            }
            s.push_str("\r\n");
            s.into_bytes()
        },
        &[431, 400],
    )
    .await;
    h.expect(
        "oversized X-Request-Id is ignored, bad token still 401",
        client
            .get(app.url("/v1/items"))
            .header("x-request-id", "r".repeat(4000))
            .header("authorization", "Bearer x"),
        &[401],
    )
    .await;

    // Malformed JSON.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    h.expect(
        "deeply nested array body",
        post(deep.clone().into_bytes()),
        &[400, 422],
    )
    .await;
    let deep_obj = format!(
        r#"{{"name":"n","price":1,"quantity":1,"description":{}1{}}}"#,
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    h.expect(
        "deeply nested object in a field",
        post(deep_obj.into_bytes()),
        &[400, 422],
    )
    .await;
    h.expect(
        "deep merge patch",
        client
            .patch(&one)
            .header("content-type", "application/merge-patch+json")
            .body(deep.clone()),
        &[400, 422],
    )
    .await;
    for (what, body) in [
        (
            "invalid UTF-8 in a string",
            b"{\"name\":\"\xff\xfe\",\"price\":1,\"quantity\":1}".to_vec(),
        ),
        (
            "invalid UTF-8 overlong",
            b"{\"name\":\"\xc0\xaf\",\"price\":1,\"quantity\":1}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"name":"\ud800","price":1,"quantity":1}"#.to_vec(),
        ),
        (
            "NUL byte raw",
            b"{\"name\":\"a\x00b\",\"price\":1,\"quantity\":1}".to_vec(),
        ),
        ("truncated", br#"{"name":"a","price":1,"#.to_vec()),
        (
            "trailing garbage",
            br#"{"name":"a","price":1,"quantity":1}}"#.to_vec(),
        ),
        ("empty body", Vec::new()),
        ("json null", b"null".to_vec()),
        ("array body", b"[]".to_vec()),
        (
            "BOM prefix",
            b"\xef\xbb\xbf{\"name\":\"a\",\"price\":1,\"quantity\":1}".to_vec(),
        ),
        ("NaN", br#"{"name":"a","price":NaN,"quantity":1}"#.to_vec()),
        (
            "Infinity",
            br#"{"name":"a","price":Infinity,"quantity":1}"#.to_vec(),
        ),
        (
            "huge float price",
            br#"{"name":"a","price":1e400,"quantity":1}"#.to_vec(),
        ),
        (
            "huge integer price",
            format!(
                r#"{{"name":"a","price":{},"quantity":1}}"#,
                "9".repeat(5000)
            )
            .into_bytes(),
        ),
        (
            "price 1e9+0.01",
            br#"{"name":"a","price":1000000000.01,"quantity":1}"#.to_vec(),
        ),
        (
            "tiny price",
            br#"{"name":"a","price":1e-300,"quantity":1}"#.to_vec(),
        ),
        (
            "negative zero price",
            br#"{"name":"a","price":-0.0,"quantity":1}"#.to_vec(),
        ),
        (
            "quantity 2^63",
            br#"{"name":"a","price":1,"quantity":9223372036854775808}"#.to_vec(),
        ),
        (
            "quantity 2^53",
            br#"{"name":"a","price":1,"quantity":9007199254740992}"#.to_vec(),
        ),
        (
            "quantity negative",
            br#"{"name":"a","price":1,"quantity":-1}"#.to_vec(),
        ),
        (
            "quantity float",
            br#"{"name":"a","price":1,"quantity":1.5}"#.to_vec(),
        ),
        (
            "quantity huge exponent",
            br#"{"name":"a","price":1,"quantity":1e300}"#.to_vec(),
        ),
        (
            "duplicate keys",
            br#"{"name":"a","name":"b","price":1,"quantity":1}"#.to_vec(),
        ),
        (
            "duplicate keys, case variants are unknown fields",
            br#"{"name":"a","Name":"b","price":1,"quantity":1}"#.to_vec(),
        ),
        (
            "prototype pollution key",
            br#"{"name":"a","price":1,"quantity":1,"__proto__":{"admin":true}}"#.to_vec(),
        ),
        (
            "server field id",
            br#"{"name":"a","price":1,"quantity":1,"id":"00000000-0000-0000-0000-000000000000"}"#
                .to_vec(),
        ),
        (
            "server field version",
            br#"{"name":"a","price":1,"quantity":1,"version":99}"#.to_vec(),
        ),
        (
            "name as object",
            br#"{"name":{"$ne":null},"price":1,"quantity":1}"#.to_vec(),
        ),
        (
            "tags as string",
            br#"{"name":"a","price":1,"quantity":1,"tags":"x"}"#.to_vec(),
        ),
        (
            "100k tags",
            format!(
                r#"{{"name":"a","price":1,"quantity":1,"tags":[{}"t"]}}"#,
                "\"t\",".repeat(6000)
            )
            .into_bytes(),
        ),
    ] {
        h.expect(what, post(body), &[400, 413, 422]).await;
    }

    // Unicode edge cases in names: control characters, blank and over-long names are rejected ...
    for name in [
        "\u{0}",
        "a\u{7}b",
        "\u{1b}[31mred",
        "line\nbreak",
        "tab\there",
        "\u{85}",
        "   ",
        "",
        "x".repeat(101).as_str(),
        "é".repeat(101).as_str(),
    ] {
        h.expect(
            &format!("bad name {name:?}"),
            client
                .post(app.url("/v1/items"))
                .json(&json!({"name": name, "price": 1, "quantity": 1})),
            &[422],
        )
        .await;
    }
    // ... everything else (combining marks, bidi overrides, zero-width, astral planes) is
    // stored verbatim: clients escape names when they display them.
    let mut accepted = Vec::new();
    for name in [
        "e\u{301}cole",
        "\u{202e}gnp.exe",
        "👩‍👩‍👧‍👦 family",
        "Ω≈ç√∫",
        "日本語の名前",
        "a\u{fe0f}",
        "\u{fffd}",
        "\u{200b}",
        "𝕳𝖊𝖑𝖑𝖔",
        "\u{10ffff}x",
        &"🦀".repeat(100),
    ] {
        let r = client
            .post(app.url("/v1/items"))
            .header("authorization", &auth)
            .json(&json!({"name": name, "price": 1, "quantity": 1}))
            .send()
            .await
            .unwrap();
        h.tried += 1;
        assert_eq!(r.status(), 201, "{name:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["name"], name, "stored verbatim");
        accepted.push(body);
    }

    // Ids and paths.
    for path in [
        "/v1/items/..%2F..%2Fetc%2Fpasswd",
        "/v1/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/items/%00",
        &format!("/v1/items/{id}%00"),
        &format!("/v1/items/{id}%00.json"),
        &format!("/v1/items/{id}'--"),
        "/v1/items/1%20OR%201=1",
        "/v1/items/%ff%fe",
        "/v1/items/00000000-0000-0000-0000-00000000000g",
        &format!("/v1/items/{}", "a".repeat(5000)),
    ] {
        h.expect(
            &format!("GET {path}"),
            client.get(app.url(path)),
            &[400, 404],
        )
        .await;
        h.expect(
            &format!("DELETE {path}"),
            client.delete(app.url(path)),
            &[400, 404],
        )
        .await;
    }
    for raw_path in [
        "/v1/items/../../../etc/passwd",
        "/v1/items/./../items/%2e%2e",
        "/v1/items/\\..\\..\\windows",
    ] {
        h.raw(&format!("raw path {raw_path}"), format!("GET {raw_path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").into_bytes(), &[400, 404]).await;
    }
    h.raw("NUL in request line", format!("GET /v1/items/\0 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").into_bytes(), &[400]).await;
    h.raw(
        "invalid UTF-8 in path",
        [
            b"GET /v1/items/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: ".as_slice(),
            auth.as_bytes(),
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat(),
        &[400],
    )
    .await;
    h.raw(
        "bad method",
        b"G\x01T /v1/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        &[400, 405],
    )
    .await;
    h.raw("HTTP request smuggling (CL + TE)", format!("POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").into_bytes(), &[400, 422]).await;
    h.raw("two Content-Length values", format!("POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{{}}").into_bytes(), &[400]).await;

    // Query strings.
    for q in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=1e3",
        "limit=99999999999999999999",
        "limit=%00",
        "cursor=' OR 1=1 --",
        "cursor=%00%00",
        &format!("cursor={}", "A".repeat(5000)),
        "tag=' OR '1'='1",
        "tag=%00",
        "tag=a;DROP TABLE items",
        &format!("q={}", "x".repeat(101)),
        "limit=1&limit=2",
        "q=%ff",
    ] {
        h.expect(
            &format!("GET /v1/items?{q}"),
            client.get(app.url(&format!("/v1/items?{q}"))),
            &[400, 422],
        )
        .await;
    }

    // Headers.
    for (name, value) in [
        ("idempotency-key", "k ey"),
        ("idempotency-key", &"k".repeat(256)),
        ("if-match", "\u{ff}"),
    ] {
        let mut req = if name == "if-match" {
            client.put(&one).json(&item("h"))
        } else {
            client.post(app.url("/v1/items")).json(&item("h"))
        };
        let v = reqwest::header::HeaderValue::from_bytes(value.as_bytes()).expect("header value");
        req = req.header(name, v);
        h.expect(&format!("{name}: {value:.20}"), req, &[400]).await;
    }
    h.expect(
        "If-Match that is not an entity-tag (a space inside)",
        client
            .put(&one)
            .header("if-match", "\"1' OR '1'='1\"")
            .json(&item("x")),
        &[400],
    )
    .await;
    h.expect(
        "If-Match that matches nothing",
        client
            .put(&one)
            .header("if-match", "\"1'OR'1'='1\"")
            .json(&item("x")),
        &[412],
    )
    .await;
    h.expect(
        "content-type text/plain",
        client
            .post(app.url("/v1/items"))
            .header("content-type", "text/plain")
            .body("{}"),
        &[415],
    )
    .await;
    h.expect(
        "content-type with injection",
        client
            .post(app.url("/v1/items"))
            .header("content-type", "application/json\"; x=<script>")
            .body("{}"),
        &[415, 422],
    )
    .await;

    // Tokens.
    let expired = sign(
        Algorithm::HS256,
        &hs(TEST_SECRET),
        None,
        &json!({"sub": "x", "scope": "items:write", "exp": now() - 3600}),
    );
    let forged = {
        let good = token("tester", &["items:read"]);
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            json!({"sub": "tester", "scope": "items:read items:write", "exp": now() + 600})
                .to_string(),
        );
        parts.join(".")
    };
    let none = alg_none_token(&json!({"sub": "x", "scope": "items:write", "exp": now() + 600}));
    let wrong_key = sign(
        Algorithm::HS256,
        &hs("wrong-wrong-wrong-wrong-wrong-wrong-wrong"),
        None,
        &claims("x", "items:write"),
    );
    let rsa = sign(
        Algorithm::RS256,
        &pem_key(Algorithm::RS256, "rsa-private.pem"),
        None,
        &claims("x", "items:write"),
    );
    for (what, t) in [
        ("expired", expired),
        ("forged payload", forged),
        ("alg none", none),
        ("wrong key", wrong_key),
        ("RS256 vs HS256 config", rsa),
    ] {
        for method in ["POST", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let url = if method == "POST" {
                app.url("/v1/items")
            } else {
                one.clone()
            };
            h.expect(
                &format!("{what} token on {method}"),
                client
                    .request(m, url)
                    .header("authorization", bearer(&t))
                    .json(&item("evil")),
                &[401],
            )
            .await;
        }
    }

    // SQL metacharacters in every string field are stored verbatim, never executed.
    let sql = [
        "'; DROP TABLE items; --",
        "\" OR \"\"=\"",
        "1; DELETE FROM items WHERE 1=1",
        "Robert'); DROP TABLE idempotency_keys;--",
        "%' OR name LIKE '%",
        "\\'; SELECT pg_sleep(10); --",
        "$$; DROP TABLE items; $$",
        "\\x00\\x1a",
    ];
    for s in sql {
        let body =
            json!({"name": s, "description": s, "price": 1.5, "quantity": 2, "tags": ["sql"]});
        let r = client
            .post(app.url("/v1/items"))
            .header("authorization", &auth)
            .header("idempotency-key", s.replace(' ', "_"))
            .json(&body)
            .send()
            .await
            .unwrap();
        h.tried += 1;
        assert_eq!(r.status(), 201, "{s}");
        let created: Value = r.json().await.unwrap();
        assert_eq!(created["name"], s);
        assert_eq!(created["description"], s);
        let r = client
            .get(app.url(&format!("/v1/items/{}", created["id"].as_str().unwrap())))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["name"], s);
        // Search and tag filters with the same text find or reject, never break.
        let r = client
            .get(app.url("/v1/items"))
            .query(&[("q", s)])
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        h.tried += 1;
        assert_eq!(r.status(), 200, "q={s}");
        let found: Value = r.json().await.unwrap();
        assert!(
            found["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == s),
            "q={s} finds it"
        );
        h.expect(
            &format!("tag={s}"),
            client.get(app.url("/v1/items")).query(&[("tag", s)]),
            &[422],
        )
        .await;
        h.expect(
            &format!("tag in body {s}"),
            client
                .post(app.url("/v1/items"))
                .json(&json!({"name": "t", "price": 1, "quantity": 1, "tags": [s]})),
            &[422],
        )
        .await;
        h.expect(
            &format!("patch with {s} as a key"),
            client
                .patch(&one)
                .header("content-type", "application/merge-patch+json")
                .body(json!({s: 1}).to_string()),
            &[422],
        )
        .await;
    }

    // Everything is still there and unchanged.
    let r = client
        .get(app.url(&format!("/v1/items/{id}")))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        stored[0],
        "alpha unchanged"
    );
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let r: Value = client
            .get(app.url(&format!("/v1/items?limit=100&cursor={cursor}")))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.extend(r["items"].as_array().unwrap().iter().cloned());
        match r["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let expected = stored.len() + accepted.len() + sql.len();
    assert_eq!(
        all.len(),
        expected,
        "no item created or lost by hostile input"
    );
    assert_eq!(all[1], stored[1], "beta unchanged");
    assert!(
        app.get("/readyz").await.status().is_success(),
        "still ready"
    );

    let total = HOSTILE_CASES.fetch_add(h.tried, Ordering::SeqCst) + h.tried;
    println!(
        "hostile cases tried ({b:?}): {} (running total {total})",
        h.tried
    );
    eprintln!("hostile cases tried ({b:?}): {}", h.tried);
}
