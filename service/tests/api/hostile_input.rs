//! Hostile inputs (issue 4): oversized, malformed and malicious bodies, paths, query strings,
//! headers and tokens each get a clean 4xx (problem+json), on both backends, and stored data
//! stays intact.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use shipshape::config::Config;

use crate::helpers::{
    Backend, TEST_SECRET, TestApp, assert_problem, item,
    jwt::{alg_none_token, bearer, claims, hs, now, pem_key, sign},
    raw_exchange, token, with_auth,
};

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
    let limit = app.state.body_limit.0;
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
