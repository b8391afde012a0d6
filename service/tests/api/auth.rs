//! JWT authentication and scopes over real HTTP: RFC 6750 challenges for every kind of bad
//! token, scopes for reads and writes, public reads, public operational routes; and, with the
//! real binary, auth configuration errors and `shipshape token`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TEST_SECRET, TestApp, assert_401, assert_problem, call,
    child::run,
    fixture,
    jwt::{alg_none_token, bearer, claims, hs, now, pem_key, sign},
    rejected, token, with_auth, www_auth,
};

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
    let mut cfg = shipshape::config::AuthConfig {
        hs256_secret: shipshape::config::Secret::new(TEST_SECRET),
        issuer: "local".into(),
        ..Default::default()
    };
    cfg.load_keys().unwrap();
    let verifier = shipshape::auth::Verifier::new(&cfg).unwrap();
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
