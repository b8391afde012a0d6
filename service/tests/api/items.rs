//! Black-box API tests over real HTTP, each run against SQLite and PostgreSQL.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_problem, item};

/// The `name` of every item on a list page, in order.
fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(
    create_returns_201_with_location_etag_and_server_fields,
    prices_round_trip_exactly,
    validation_reports_every_invalid_field,
    unknown_and_duplicate_fields_are_rejected,
    malformed_and_oversized_bodies_are_rejected,
    wrong_content_type_is_415,
    ids_and_routes_errors,
    get_supports_if_none_match,
    list_paginates_with_stable_cursor,
    list_filters_by_tag_and_name,
    cursor_keeps_the_filters_it_was_issued_for,
    list_rejects_bad_parameters,
    put_replaces_and_honours_if_match,
    patch_merges_and_validates,
    delete_honours_if_match,
    idempotency_key_replays_and_rejects_reuse,
    concurrent_idempotent_posts_create_one_item,
    sql_metacharacters_are_stored_verbatim,
);

async fn create_returns_201_with_location_etag_and_server_fields(b: Backend) {
    let app = TestApp::spawn(b).await;
    let r = app
        .post_item(&json!({"name": "  Espresso cup  ", "price": 4.5, "quantity": 0}))
        .await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/items/{id}"));
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(body["name"], "Espresso cup", "name is trimmed");
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["tags"], json!([]));
    assert_eq!(body["version"], 1);
    assert_eq!(body["created_at"], body["updated_at"]);
    let created = body["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z'), "RFC 3339 UTC: {created}");
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).unwrap();

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, body);
}

async fn prices_round_trip_exactly(b: Backend) {
    let app = TestApp::spawn(b).await;
    for price in ["19.99", "0.01", "0.1", "1000000000", "123456789.99", "5"] {
        let body = format!(r#"{{"name":"p","price":{price},"quantity":1}}"#);
        let r = app
            .client
            .post(app.url("/v1/items"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{price}");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let text = app.get(&location).await.text().await.unwrap();
        let expected = if price.contains('.') {
            price.to_owned()
        } else {
            format!("{price}.0")
        };
        assert!(
            text.contains(&format!("\"price\":{expected},")),
            "{price} -> {text}"
        );
    }
}

async fn validation_reports_every_invalid_field(b: Backend) {
    let app = TestApp::spawn(b).await;
    let bad = json!({
        "name": "   ",
        "description": "x".repeat(1001),
        "price": 0.001,
        "quantity": -1,
        "tags": ["ok", "ok"],
    });
    let body = assert_problem(app.post_item(&bad).await, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["description", "name", "price", "quantity", "tags"]);
    for e in body["errors"].as_array().unwrap() {
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    for (field, value) in [
        ("price", json!(0)),
        ("price", json!(-5)),
        ("price", json!(1000000000.01)),
        ("name", json!("x".repeat(101))),
        ("tags", json!(["UPPER"])),
        ("tags", json!(["a b"])),
        ("tags", json!(["x".repeat(33)])),
        (
            "tags",
            json!(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]),
        ),
        ("quantity", json!(1.5)),
        ("quantity", json!(9007199254740992u64)),
        ("name", json!(42)),
    ] {
        let mut body = item("v");
        body[field] = value.clone();
        let p = assert_problem(app.post_item(&body).await, 422).await;
        assert_eq!(
            p["errors"][0]["field"].as_str().unwrap().split('[').next(),
            Some(field),
            "{field}={value}: {p}"
        );
    }
    let r = app.get("/v1/items").await.json::<Value>().await.unwrap();
    assert_eq!(r["items"], json!([]), "nothing stored");
}

async fn unknown_and_duplicate_fields_are_rejected(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut body = item("u");
    body["colour"] = json!("red");
    let p = assert_problem(app.post_item(&body).await, 422).await;
    assert_eq!(p["errors"][0]["field"], "colour");
    body = item("u");
    body["id"] = json!("0190c5a3-0000-7000-8000-000000000000");
    assert_problem(app.post_item(&body).await, 422).await;
    let dup = r#"{"name":"a","name":"b","price":1,"quantity":1}"#;
    let r = app
        .client
        .post(app.url("/v1/items"))
        .header("content-type", "application/json")
        .body(dup)
        .send()
        .await
        .unwrap();
    assert_problem(r, 422).await;
    let missing = json!({"name": "no price", "quantity": 1});
    let p = assert_problem(app.post_item(&missing).await, 422).await;
    assert_eq!(p["errors"][0]["field"], "price");
}

async fn malformed_and_oversized_bodies_are_rejected(b: Backend) {
    let app = TestApp::spawn(b).await;
    let send = |body: Vec<u8>| {
        app.client
            .post(app.url("/v1/items"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_problem(send(b"{\"name\": ".to_vec()).await.unwrap(), 400).await;
    assert_problem(send(b"[1,2".to_vec()).await.unwrap(), 400).await;
    assert_problem(
        send(b"{\"name\":\"\xff\xfe\",\"price\":1,\"quantity\":1}".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let r = send(deep.into_bytes()).await.unwrap();
    assert!(
        r.status() == 400 || r.status() == 422,
        "deep nesting: {}",
        r.status()
    );
    let mut big = item("big");
    big["description"] = json!("x".repeat(70 * 1024));
    assert_problem(app.post_item(&big).await, 413).await;
    assert_problem(send(b"".to_vec()).await.unwrap(), 400).await;
}

async fn wrong_content_type_is_415(b: Backend) {
    let app = TestApp::spawn(b).await;
    let body = serde_json::to_vec(&item("ct")).unwrap();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app.client.post(app.url("/v1/items")).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_problem(req.send().await.unwrap(), 415).await;
    }
    let r = app
        .client
        .post(app.url("/v1/items"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn ids_and_routes_errors(b: Backend) {
    let app = TestApp::spawn(b).await;
    assert_problem(app.get("/v1/items/not-a-uuid").await, 400).await;
    assert_problem(app.get("/v1/items/..%2F..%2Fetc%2Fpasswd").await, 400).await;
    assert_problem(app.get("/v1/items/%00").await, 400).await;
    let missing = uuid::Uuid::now_v7();
    assert_problem(app.get(&format!("/v1/items/{missing}")).await, 404).await;
    assert_problem(app.get("/v2/nothing").await, 404).await;
    let r = app
        .client
        .delete(app.url("/v1/items"))
        .send()
        .await
        .unwrap();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    assert_problem(r, 405).await;
    let r = app
        .client
        .post(app.url(&format!("/v1/items/{missing}")))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("allow").is_some());
    assert_problem(r, 405).await;
    let del = app
        .client
        .delete(app.url(&format!("/v1/items/{missing}")))
        .send()
        .await
        .unwrap();
    assert_problem(del, 404).await;
}

async fn get_supports_if_none_match(b: Backend) {
    let app = TestApp::spawn(b).await;
    let created = app.create("etag").await;
    let path = format!("/v1/items/{}", created["id"].as_str().unwrap());
    let r = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let r = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "W/\"1\", \"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "weak comparison");
    let r = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(app.url(&path))
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

async fn list_paginates_with_stable_cursor(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            app.create(&format!("item {i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let default: Value = app.get("/v1/items").await.json().await.unwrap();
    assert_eq!(
        default["items"].as_array().unwrap().len(),
        20,
        "default limit 20"
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/items?limit=10&cursor={c}"),
            None => "/v1/items?limit=10".into(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        for it in page["items"].as_array().unwrap() {
            seen.push(it["id"].as_str().unwrap().to_owned());
        }
        // A new item created mid-pagination appears at the end, never shifting pages.
        if pages == 1 {
            ids.push(app.create("late").await["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every item once, in creation order");
    let all: Value = app.get("/v1/items?limit=100").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 26);
    assert_eq!(all["next_cursor"], Value::Null);
}

async fn list_filters_by_tag_and_name(b: Backend) {
    let app = TestApp::spawn(b).await;
    for (name, tags) in [
        ("Red Mug", vec!["kitchen", "red"]),
        ("Blue mug", vec!["kitchen"]),
        ("Red Pen", vec!["office", "red"]),
    ] {
        let r = app
            .post_item(&json!({"name": name, "price": 1, "quantity": 1, "tags": tags}))
            .await;
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        names(&app.get("/v1/items?tag=red").await.json().await.unwrap()),
        ["Red Mug", "Red Pen"]
    );
    assert_eq!(
        names(&app.get("/v1/items?q=MUG").await.json().await.unwrap()),
        ["Red Mug", "Blue mug"]
    );
    assert_eq!(
        names(
            &app.get("/v1/items?q=mug&tag=red")
                .await
                .json()
                .await
                .unwrap()
        ),
        ["Red Mug"]
    );
    assert_eq!(
        names(&app.get("/v1/items?q=%25").await.json().await.unwrap()),
        Vec::<String>::new(),
        "% is literal"
    );
    let page: Value = app
        .get("/v1/items?tag=kitchen&limit=1")
        .await
        .json()
        .await
        .unwrap();
    let next = page["next_cursor"].as_str().unwrap();
    let page2: Value = app
        .get(&format!("/v1/items?tag=kitchen&limit=1&cursor={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&page2), ["Blue mug"]);
}

/// A cursor carries its listing: alone, it continues the filtered listing (README's
/// `?cursor=<next_cursor>`); with the same filters it is accepted; with other filters 400.
async fn cursor_keeps_the_filters_it_was_issued_for(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut kitchen_cups = Vec::new();
    for i in 0..9 {
        let (name, tags) = match i % 3 {
            0 => (format!("Cup {i}"), vec!["kitchen"]),
            1 => (format!("Cup {i}"), vec!["office"]),
            _ => (format!("Plate {i}"), vec!["kitchen"]),
        };
        let r = app
            .post_item(&json!({"name": name, "price": 1, "quantity": 1, "tags": tags}))
            .await;
        assert_eq!(r.status(), 201);
        if i % 3 == 0 {
            kitchen_cups.push(name);
        }
    }
    // Follow next_cursor alone, as README shows: every page keeps tag, q and limit.
    let mut page: Value = app
        .get("/v1/items?tag=kitchen&q=CUP&limit=1")
        .await
        .json()
        .await
        .unwrap();
    let mut seen = names(&page);
    let mut first_cursor = None;
    while let Some(c) = page["next_cursor"].as_str().map(str::to_owned) {
        first_cursor.get_or_insert(c.clone());
        page = app
            .get(&format!("/v1/items?cursor={c}"))
            .await
            .json()
            .await
            .unwrap();
        assert!(names(&page).len() <= 1, "the cursor keeps limit=1: {page}");
        seen.extend(names(&page));
    }
    assert_eq!(seen, kitchen_cups, "only kitchen cups, each once, in order");
    let c = first_cursor.expect("more than one page");

    // Repeating the cursor's own filters is fine (q compared ignoring case); limit may change.
    let again: Value = app
        .get(&format!("/v1/items?tag=kitchen&q=cup&limit=5&cursor={c}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&again), kitchen_cups[1..]);

    // Other filters than the cursor's: 400 naming the conflict.
    for (query, name) in [
        (format!("tag=office&cursor={c}"), "tag"),
        (format!("q=plate&cursor={c}"), "q"),
    ] {
        let body = assert_problem(app.get(&format!("/v1/items?{query}")).await, 400).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("{name}=")) && detail.contains("cursor"),
            "{query}: {detail}"
        );
    }
    // A cursor of an unfiltered listing does not take a filter either.
    let all: Value = app.get("/v1/items?limit=1").await.json().await.unwrap();
    let unfiltered = all["next_cursor"].as_str().unwrap();
    let body = assert_problem(
        app.get(&format!("/v1/items?tag=kitchen&cursor={unfiltered}"))
            .await,
        400,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("no tag"),
        "{body}"
    );
}

async fn list_rejects_bad_parameters(b: Backend) {
    let app = TestApp::spawn(b).await;
    let body = assert_problem(app.get("/v1/items?limit=0").await, 422).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("query") && detail.contains("`limit`") && !detail.contains("body"),
        "a bad limit is a query problem: {detail}"
    );
    assert_eq!(body["errors"][0]["field"], "limit");
    assert_problem(app.get("/v1/items?limit=101").await, 422).await;
    assert_problem(app.get("/v1/items?limit=abc").await, 400).await;
    assert_problem(app.get("/v1/items?cursor=garbage").await, 400).await;
    assert_problem(app.get("/v1/items?cursor=%00%01").await, 400).await;
    assert_problem(app.get("/v1/items?tag=Not%20A%20Tag").await, 422).await;
}

async fn put_replaces_and_honours_if_match(b: Backend) {
    let app = TestApp::spawn(b).await;
    let created = app.create("put").await;
    let path = format!("/v1/items/{}", created["id"].as_str().unwrap());
    let replacement = json!({"name": "replaced", "price": 2.5, "quantity": 7});
    let r = app
        .client
        .put(app.url(&path))
        .header("if-match", "\"1\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "replaced");
    assert_eq!(
        body["description"],
        Value::Null,
        "full replace drops omitted optional fields"
    );
    assert_eq!(body["tags"], json!([]));
    assert_eq!(body["version"], 2);
    assert_eq!(body["created_at"], created["created_at"]);
    assert_ne!(body["updated_at"], created["updated_at"]);
    let stale = app
        .client
        .put(app.url(&path))
        .header("if-match", "\"1\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412).await;
    let weak = app
        .client
        .put(app.url(&path))
        .header("if-match", "W/\"2\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_problem(weak, 412).await;
    let any = app
        .client
        .put(app.url(&path))
        .header("if-match", "*")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(any.status(), 200);
    let plain = app
        .client
        .put(app.url(&path))
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let missing = format!("/v1/items/{}", uuid::Uuid::now_v7());
    assert_problem(
        app.client
            .put(app.url(&missing))
            .json(&replacement)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let invalid = app
        .client
        .put(app.url(&path))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(invalid, 422).await;
    let after: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(after["version"], 4, "failed writes changed nothing");
}

async fn patch_merges_and_validates(b: Backend) {
    let app = TestApp::spawn(b).await;
    let created = app.create("patch me").await;
    let path = format!("/v1/items/{}", created["id"].as_str().unwrap());
    let patch = |body: Value| {
        app.client
            .patch(app.url(&path))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let r = patch(json!({"price": 5.25, "description": null, "tags": ["new"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["price"], 5.25);
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["tags"], json!(["new"]));
    assert_eq!(body["name"], "patch me", "untouched fields stay");
    assert_eq!(body["quantity"], 3);
    assert_eq!(body["version"], 2);
    let p = assert_problem(patch(json!({"price": -1})).await.unwrap(), 422).await;
    assert_eq!(p["errors"][0]["field"], "price");
    assert_problem(patch(json!({"name": null})).await.unwrap(), 422).await;
    assert_problem(patch(json!({"version": 9})).await.unwrap(), 422).await;
    assert_problem(patch(json!(["not", "an", "object"])).await.unwrap(), 422).await;
    let stale = app
        .client
        .patch(app.url(&path))
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"1\"")
        .body("{\"quantity\": 1}")
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412).await;
    let ok = app
        .client
        .patch(app.url(&path))
        .header("content-type", "application/json")
        .header("if-match", "\"2\"")
        .body("{\"quantity\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let text = app
        .client
        .patch(app.url(&path))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415).await;
    let after: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(after["quantity"], 1);
    assert_eq!(after["price"], 5.25);
    assert_eq!(after["version"], 3);
}

async fn delete_honours_if_match(b: Backend) {
    let app = TestApp::spawn(b).await;
    let created = app.create("bye").await;
    let path = format!("/v1/items/{}", created["id"].as_str().unwrap());
    let stale = app
        .client
        .delete(app.url(&path))
        .header("if-match", "\"9\"")
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412).await;
    assert_eq!(app.get(&path).await.status(), 200);
    let r = app
        .client
        .delete(app.url(&path))
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_problem(app.get(&path).await, 404).await;
    assert_problem(app.client.delete(app.url(&path)).send().await.unwrap(), 404).await;
}

async fn idempotency_key_replays_and_rejects_reuse(b: Backend) {
    let app = TestApp::spawn(b).await;
    let post = |key: &str, body: Value| {
        app.client
            .post(app.url("/v1/items"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = post("order-42", item("once")).await.unwrap();
    assert_eq!(first.status(), 201);
    let loc1 = first.headers()["location"].clone();
    let body1 = first.text().await.unwrap();
    // Same body, different formatting: the same request.
    let retry = app
        .client
        .post(app.url("/v1/items"))
        .header("idempotency-key", "order-42")
        .header("content-type", "application/json")
        .body(serde_json::to_string_pretty(&item("once")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["location"], loc1);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), body1);
    let reused = post("order-42", item("different")).await.unwrap();
    let p = assert_problem(reused, 422).await;
    assert_eq!(p["type"], "urn:shipshape:problem:idempotency-key-reused");
    let list: Value = app.get("/v1/items").await.json().await.unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "exactly one item created"
    );
    assert_problem(post("", item("x")).await.unwrap(), 400).await;
    assert_problem(post(&"k".repeat(256), item("x")).await.unwrap(), 400).await;
    let other = post("order-43", item("once")).await.unwrap();
    assert_eq!(other.status(), 201);
    assert_ne!(
        other.headers()["location"],
        loc1,
        "another key is another item"
    );
}

async fn concurrent_idempotent_posts_create_one_item(b: Backend) {
    let app = TestApp::spawn(b).await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = app.client.clone();
        let url = app.url("/v1/items");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("idempotency-key", "race")
                .json(&item("race"))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap().to_owned(),
            )
        }));
    }
    let mut locations = std::collections::HashSet::new();
    for t in tasks {
        let (status, loc) = t.await.unwrap();
        assert_eq!(status, 201);
        locations.insert(loc);
    }
    assert_eq!(locations.len(), 1, "all retries got the same item");
    let list: Value = app.get("/v1/items").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn sql_metacharacters_are_stored_verbatim(b: Backend) {
    let app = TestApp::spawn(b).await;
    let nasty = [
        "'; DROP TABLE items; --",
        "\" OR 1=1 --",
        "Robert'); DELETE FROM items;--",
        "%_\\",
        "名前 🚀 ñ",
        "\u{202e}rtl",
    ];
    let mut paths = Vec::new();
    for name in nasty {
        let body = json!({"name": name, "description": name, "price": 1, "quantity": 1});
        let r = app.post_item(&body).await;
        assert_eq!(r.status(), 201, "{name}");
        paths.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    for (path, name) in paths.iter().zip(nasty) {
        let got: Value = app.get(path).await.json().await.unwrap();
        assert_eq!(got["name"], name);
        assert_eq!(got["description"], name);
    }
    let q: Value = app
        .get("/v1/items?q=%27%3B%20DROP")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(q["items"].as_array().unwrap().len(), 1);
    let all: Value = app.get("/v1/items").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), nasty.len());
}
