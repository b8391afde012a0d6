//! HTTP handlers for `/v1/items`: create (idempotent), list (keyset pages), get, replace,
//! merge-patch and delete, with ETag-based conditional requests.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    error::{ApiError, Problem},
    extract::{ItemId, JsonBody, QueryParams, parse_json},
};
use crate::items::{
    cursor,
    model::{FieldError, Item, ItemInput, ItemPatch, NewItem, TAG_RULE, is_valid_tag},
    store::{CreateOutcome, Idempotency, ListQuery, SharedStore, WriteOutcome, now_micros},
};

const MAX_IDEMPOTENCY_KEY: usize = 255;
const PATCH_ATTEMPTS: usize = 3;

/// One page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query parameters of `GET /v1/items`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`. It carries the listing's `tag`, `q`
    /// and `limit`: alone, it continues that listing; `tag` and `q`, if given too, must be the
    /// cursor's (400 otherwise); `limit` sets this page's size.
    #[param(pattern = "^(YzE[A-Za-z0-9_-]{21}|YzI6[A-Za-z0-9_-]{24,600})?$")]
    pub cursor: Option<String>,
    /// Only items carrying this tag.
    // A literal (utoipa takes no constant here); `documented_patterns_are_the_enforced_ones`
    // holds it to `TAG_PATTERN`.
    #[param(pattern = "^[a-z0-9-]{1,32}$")]
    pub tag: Option<String>,
    /// Only items whose name contains this text (case-insensitive).
    #[param(max_length = 100)]
    pub q: Option<String>,
}

fn item_response(status: StatusCode, item: &Item) -> Response {
    let mut r = (status, Json(item)).into_response();
    set_etag(r.headers_mut(), &item.etag());
    r
}

fn set_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
}

fn location(id: Uuid) -> HeaderValue {
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(&format!("/v1/items/{id}"))
        .unwrap_or(HeaderValue::from_static("/v1/items"))
}

fn created(id: Uuid, mut response: Response) -> Response {
    *response.status_mut() = StatusCode::CREATED;
    response
        .headers_mut()
        .insert(header::LOCATION, location(id));
    response
}

/// Entity tags listed in an `If-Match` / `If-None-Match` header; `None` = header absent.
enum Condition {
    Any,
    Tags(Vec<String>),
}

/// The OpenAPI `pattern` of `If-Match` and `If-None-Match`: `*` or a list of entity-tags
/// (RFC 9110 sections 8.8.3 and 13.1.1, with the empty list elements section 5.6.1 asks
/// recipients to accept), visible ASCII only, spaces as the only whitespace (leading
/// whitespace never reaches the handler: the HTTP parser strips it). Kept simple so that
/// fuzzers can generate from it. The server accepts exactly the values that match it (400
/// otherwise); a proptest holds the parser and the pattern to each other.
pub const ETAG_CONDITION_PATTERN: &str =
    r#"^(\*|(, *)*(W/)?"[!#-~]*"( *,( *(W/)?"[!#-~]*")?)*) *$"#;

fn condition(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Condition>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::BadRequest(format!(
            "invalid {name} header: expected * or entity-tags such as \"3\" or W/\"3\" \
             (RFC 9110 section 8.8.3)"
        ))
    };
    let mut tags = Vec::new();
    for v in values {
        let s = v.to_str().map_err(|_| invalid())?;
        match parse_condition(s).ok_or_else(invalid)? {
            Condition::Any => return Ok(Some(Condition::Any)),
            Condition::Tags(t) => tags.extend(t),
        }
    }
    Ok(Some(Condition::Tags(tags)))
}

/// One `If-Match`/`If-None-Match` field line: `*`, or one or more entity-tags separated by
/// commas (empty elements allowed); `None` when it is anything else.
fn parse_condition(s: &str) -> Option<Condition> {
    let ows = ' ';
    let s = s.trim_end_matches(ows);
    if s == "*" {
        return Some(Condition::Any);
    }
    let mut tags = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start_matches(ows);
            continue;
        }
        let (weak, quoted) = match rest.strip_prefix("W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let body = quoted.strip_prefix('"')?;
        let end = body.find('"')?;
        let opaque = &body[..end];
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return None;
        }
        tags.push(format!("{}\"{opaque}\"", if weak { "W/" } else { "" }));
        // After an entity-tag: the end, or a comma.
        rest = body[end + 1..].trim_start_matches(ows);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
    (!tags.is_empty()).then_some(Condition::Tags(tags))
}

impl Condition {
    /// Strong comparison (If-Match): weak tags never match.
    fn matches_strong(&self, etag: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
    /// Weak comparison (If-None-Match).
    fn matches_weak(&self, etag: &str) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| t.trim_start_matches("W/") == etag),
        }
    }
}

/// With `If-Match`: the current item's version if it matches (404 if gone, 412 if not).
async fn check_if_match(
    store: &SharedStore,
    id: Uuid,
    headers: &HeaderMap,
) -> Result<Option<i64>, ApiError> {
    let Some(cond) = condition(headers, header::IF_MATCH)? else {
        return Ok(None);
    };
    let current = store.get(id).await?.ok_or_else(not_found)?;
    if !cond.matches_strong(&current.etag()) {
        return Err(stale());
    }
    Ok(Some(current.version))
}

fn not_found() -> ApiError {
    ApiError::NotFound("no item with this id".into())
}

fn stale() -> ApiError {
    ApiError::PreconditionFailed("the item has changed since the given ETag: fetch it again".into())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().map_err(|_| bad_key())?.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad_key());
    }
    Ok(Some(key.to_owned()))
}

fn bad_key() -> ApiError {
    ApiError::BadRequest(format!(
        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
    ))
}

/// Create an item.
///
/// With an `Idempotency-Key`, a retry with the same body returns the original response
/// (with `Idempotent-Replayed: true`) and creates nothing; the same key with another body is 422.
#[utoipa::path(post, path = "/v1/items", tag = "items",
    request_body(content = ItemInput, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Client-chosen key (1-255 printable ASCII) making retries safe")),
    responses(
        (status = 201, description = "Created", body = Item,
            headers(("Location" = String, description = "URL of the new item"), ("ETag" = String, description = "Entity tag of the item"))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(store): State<SharedStore>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ItemInput>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let fingerprint = key.as_ref().map(|_| {
        // The parsed input, re-serialised: the same request in other whitespace or key order
        // has the same fingerprint.
        let canonical = serde_json::to_vec(&input).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    });
    let fields = input.into_new_item().map_err(ApiError::Validation)?;
    let now = now_micros();
    let item = Item {
        id: Uuid::now_v7(),
        name: fields.name,
        description: fields.description,
        price: fields.price,
        quantity: fields.quantity,
        tags: fields.tags,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let idempotency = key
        .zip(fingerprint)
        .map(|(key, fingerprint)| Idempotency { key, fingerprint });
    match store.create(&item, idempotency.as_ref()).await? {
        CreateOutcome::Created(item) => Ok(created(item.id, item_response(StatusCode::OK, &item))),
        CreateOutcome::Replayed { item_id, body } => {
            let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            set_etag(r.headers_mut(), "\"1\"");
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(created(item_id, r))
        }
        CreateOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

/// List items, oldest first, in pages.
///
/// `next_cursor` carries the listing it continues (`tag`, `q`, `limit`): pass it alone for the
/// next page. A request may repeat the cursor's `tag` and `q` but not change them (400); an
/// explicit `limit` sets the size of this page.
#[utoipa::path(get, path = "/v1/items", tag = "items",
    params(ListParams),
    responses(
        (status = 200, description = "A page of items", body = ItemPage),
        (status = 400, description = "Invalid cursor or query string, or filters that differ from the cursor's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Parameter out of range", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(store): State<SharedStore>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ItemPage>, ApiError> {
    if let Some(limit) = params.limit
        && !(1..=100).contains(&limit)
    {
        return Err(ApiError::InvalidQuery(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )]));
    }
    if let Some(tag) = &params.tag
        && !is_valid_tag(tag)
    {
        return Err(ApiError::InvalidQuery(vec![FieldError::new(
            "tag",
            format!("must be {TAG_RULE}"),
        )]));
    }
    let q = params.q.filter(|q| !q.is_empty());
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > cursor::MAX_Q_CHARS)
    {
        return Err(ApiError::InvalidQuery(vec![FieldError::new(
            "q",
            "must be at most 100 characters",
        )]));
    }
    let cursor = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(cursor::decode(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?)
        }
    };
    let explicit = || cursor::Listing {
        limit: params.limit.map_or(20, |l| l as u32),
        tag: params.tag.clone(),
        q: q.clone(),
    };
    let (after, listing) = match cursor {
        None => (Uuid::nil(), explicit()),
        // A version 1 cursor did not record its listing: the request's parameters apply.
        Some(cursor::Cursor {
            after,
            listing: None,
        }) => (after, explicit()),
        Some(cursor::Cursor {
            after,
            listing: Some(mut carried),
        }) => {
            let lower = |s: &Option<String>| s.as_deref().map(str::to_lowercase);
            if params.tag.is_some() && params.tag != carried.tag {
                return Err(cursor_conflict("tag", &carried.tag, &params.tag));
            }
            if q.is_some() && lower(&q) != lower(&carried.q) {
                return Err(cursor_conflict("q", &carried.q, &q));
            }
            if let Some(limit) = params.limit {
                carried.limit = limit as u32;
            }
            (after, carried)
        }
    };
    let limit = listing.limit;
    let mut items = store
        .list(&ListQuery {
            after,
            limit: limit + 1,
            tag: listing.tag.clone(),
            name_contains: listing.q.as_deref().map(str::to_lowercase),
        })
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|i| cursor::encode(i.id, &listing))
    } else {
        None
    };
    Ok(Json(ItemPage { items, next_cursor }))
}

/// 400 for a request whose filter `name` differs from the one its cursor was issued for.
fn cursor_conflict(name: &str, carried: &Option<String>, asked: &Option<String>) -> ApiError {
    let show = |v: &Option<String>| match v {
        Some(v) => format!("{name}={v:?}"),
        None => format!("no {name}"),
    };
    ApiError::BadRequest(format!(
        "the cursor continues a listing with {} but this request asks for {}: pass the \
         cursor alone (it keeps its filters), or start a new listing without `cursor`",
        show(carried),
        show(asked)
    ))
}

/// Get one item; `If-None-Match` with its current ETag gives 304.
#[utoipa::path(get, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-None-Match" = Option<String>, Header, pattern = r#"^(\*|(, *)*(W/)?"[!#-~]*"( *,( *(W/)?"[!#-~]*")?)*) *$"#, description = "ETag(s) the client has: `*` or entity-tags such as `\"3\"` (RFC 9110 section 8.8.3)")),
    responses(
        (status = 200, description = "The item", body = Item, headers(("ETag" = String, description = "Entity tag"))),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(store): State<SharedStore>,
    ItemId(id): ItemId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let item = store.get(id).await?.ok_or_else(not_found)?;
    if let Some(cond) = condition(&headers, header::IF_NONE_MATCH)?
        && cond.matches_weak(&item.etag())
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        set_etag(r.headers_mut(), &item.etag());
        return Ok(r);
    }
    Ok(item_response(StatusCode::OK, &item))
}

/// Replace an item's fields; `If-Match` makes it conditional (412 when stale).
#[utoipa::path(put, path = "/v1/items/{id}", tag = "items",
    request_body(content = ItemInput, content_type = "application/json"),
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(, *)*(W/)?"[!#-~]*"( *,( *(W/)?"[!#-~]*")?)*) *$"#, description = "ETag the change is based on: `*` or entity-tags such as `\"3\"` (RFC 9110 section 8.8.3)")),
    responses(
        (status = 200, description = "Replaced", body = Item, headers(("ETag" = String, description = "New entity tag"))),
        (status = 400, description = "Invalid id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "ETag does not match", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn replace(
    State(store): State<SharedStore>,
    ItemId(id): ItemId,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ItemInput>,
) -> Result<Response, ApiError> {
    let fields = input.into_new_item().map_err(ApiError::Validation)?;
    let expected = check_if_match(&store, id, &headers).await?;
    match store.update(id, &fields, expected, now_micros()).await? {
        WriteOutcome::Done(item) => Ok(item_response(StatusCode::OK, &item)),
        WriteOutcome::NotFound => Err(not_found()),
        WriteOutcome::VersionMismatch => Err(stale()),
    }
}

/// Change some fields with a JSON merge patch (RFC 7396); `null` removes optional fields.
#[utoipa::path(patch, path = "/v1/items/{id}", tag = "items",
    request_body(content = ItemPatch, content_type = "application/merge-patch+json", description = "Fields to change (RFC 7396)"),
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(, *)*(W/)?"[!#-~]*"( *,( *(W/)?"[!#-~]*")?)*) *$"#, description = "ETag the change is based on: `*` or entity-tags such as `\"3\"` (RFC 9110 section 8.8.3)")),
    responses(
        (status = 200, description = "Patched", body = Item, headers(("ETag" = String, description = "New entity tag"))),
        (status = 400, description = "Invalid id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent changes kept conflicting", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "ETag does not match", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The patched item is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn patch(
    State(store): State<SharedStore>,
    ItemId(id): ItemId,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let if_match = condition(&headers, header::IF_MATCH)?;
    for _ in 0..PATCH_ATTEMPTS {
        let current = store.get(id).await?.ok_or_else(not_found)?;
        // An invalid patch is 422 whatever the precondition (as PUT validates its body first).
        let fields = apply_merge_patch(&current, &patch)?;
        if let Some(cond) = &if_match
            && !cond.matches_strong(&current.etag())
        {
            return Err(stale());
        }
        match store
            .update(id, &fields, Some(current.version), now_micros())
            .await?
        {
            WriteOutcome::Done(item) => return Ok(item_response(StatusCode::OK, &item)),
            WriteOutcome::NotFound => return Err(not_found()),
            // Someone else changed it between our read and write: with If-Match that is a
            // failed precondition; without, apply the patch to the new version.
            WriteOutcome::VersionMismatch if if_match.is_some() => return Err(stale()),
            WriteOutcome::VersionMismatch => continue,
        }
    }
    Err(ApiError::Conflict(
        "the item kept changing concurrently; retry".into(),
    ))
}

/// Applies a JSON merge patch (RFC 7396) to an item's writable fields and validates the
/// result exactly like a PUT body: the outcome is a valid item or a 4xx error, never a panic.
pub fn apply_merge_patch(current: &Item, patch: &serde_json::Value) -> Result<NewItem, ApiError> {
    let mut doc = current.to_input_json();
    json_patch::merge(&mut doc, patch);
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.into()))?;
    let input: ItemInput = parse_json(&bytes)?;
    input.into_new_item().map_err(ApiError::Validation)
}

/// Delete an item; `If-Match` makes it conditional (412 when stale).
#[utoipa::path(delete, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(, *)*(W/)?"[!#-~]*"( *,( *(W/)?"[!#-~]*")?)*) *$"#, description = "ETag the deletion is based on: `*` or entity-tags such as `\"3\"` (RFC 9110 section 8.8.3)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "ETag does not match", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(store): State<SharedStore>,
    ItemId(id): ItemId,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = check_if_match(&store, id, &headers).await?;
    match store.delete(id, expected).await? {
        WriteOutcome::Done(()) => Ok(StatusCode::NO_CONTENT),
        WriteOutcome::NotFound => Err(not_found()),
        WriteOutcome::VersionMismatch => Err(stale()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        config::Config,
        items::model::{MAX_PRICE_CENTS, MAX_QUANTITY, MAX_TAGS, Price, TAG_PATTERN},
    };

    fn item() -> Item {
        let now = now_micros();
        Item {
            id: Uuid::now_v7(),
            name: "cup".into(),
            description: Some("a cup".into()),
            price: Price::from_cents(1999),
            quantity: 3,
            tags: vec!["kitchen".into()],
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// Arbitrary JSON, biased towards the item's own field names so patches hit them.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            (0i64..10_000_000).prop_map(|c| json!(c as f64 / 100.0)),
            ".{0,120}".prop_map(Value::String),
            "[a-z0-9-]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("name".to_owned()),
                Just("description".to_owned()),
                Just("price".to_owned()),
                Just("quantity".to_owned()),
                Just("tags".to_owned()),
                ".{0,12}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn assert_valid(n: &NewItem) {
        assert_eq!(n.name.trim(), n.name);
        let chars = n.name.chars().count();
        assert!((1..=100).contains(&chars), "{:?}", n.name);
        assert!(!n.name.chars().any(char::is_control));
        if let Some(d) = &n.description {
            assert!(d.chars().count() <= 1000);
        }
        assert!(n.price.cents() > 0 && n.price.cents() <= MAX_PRICE_CENTS);
        assert!((0..=MAX_QUANTITY).contains(&n.quantity));
        assert!(n.tags.len() <= MAX_TAGS);
        for (i, t) in n.tags.iter().enumerate() {
            assert!(is_valid_tag(t));
            assert!(!n.tags[..i].contains(t));
        }
    }

    #[test]
    fn empty_patch_keeps_the_item_and_null_removes_optional_fields() {
        let current = item();
        let same = apply_merge_patch(&current, &json!({})).unwrap();
        assert_eq!(same.name, current.name);
        assert_eq!(same.price, current.price);
        assert_eq!(same.tags, current.tags);
        let cleared =
            apply_merge_patch(&current, &json!({"description": null, "tags": null})).unwrap();
        assert_eq!(cleared.description, None);
        assert!(cleared.tags.is_empty());
        assert!(matches!(
            apply_merge_patch(&current, &json!({"name": null})),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            apply_merge_patch(&current, &json!({"id": "x"})),
            Err(ApiError::Validation(_))
        ));
    }

    /// The patterns the OpenAPI document declares are the ones the server enforces.
    #[test]
    fn documented_patterns_are_the_enforced_ones() {
        let served = crate::http::docs::openapi(&Config::default());
        let doc = serde_json::to_value(served).unwrap();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap();
                    let pattern = p["schema"]["pattern"].as_str();
                    let expected = match name {
                        "If-Match" | "If-None-Match" => ETAG_CONDITION_PATTERN,
                        "cursor" => cursor::PATTERN,
                        "tag" => TAG_PATTERN,
                        _ => continue,
                    };
                    assert_eq!(pattern, Some(expected), "{method} {path} {name}");
                    if p["in"] == "header" {
                        // Absent or a string, never `null` (which fuzzers would send).
                        assert_eq!(p["schema"]["type"], "string", "{method} {path} {name}");
                    }
                    seen += 1;
                }
            }
        }
        assert_eq!(
            seen, 6,
            "If-None-Match on GET, If-Match on PUT/PATCH/DELETE, cursor, tag"
        );
    }

    #[test]
    fn conditions_are_entity_tags() {
        let tags = |s: &str| match parse_condition(s) {
            Some(Condition::Tags(t)) => Some(t),
            Some(Condition::Any) => Some(vec!["*".to_owned()]),
            None => None,
        };
        assert_eq!(tags("\"1\""), Some(vec!["\"1\"".to_owned()]));
        assert_eq!(
            tags("W/\"1\" ,, \"a,b\" , "),
            Some(vec!["W/\"1\"".to_owned(), "\"a,b\"".to_owned()])
        );
        assert_eq!(tags("*"), Some(vec!["*".to_owned()]));
        for bad in [
            "null",
            "1",
            "",
            ",",
            "\"1",
            "\"1\" \"2\"",
            "w/\"1\"",
            "* , \"1\"",
            "\"a b\"",
            " \"1\"",
            "\"1\"\t,\"2\"",
        ] {
            assert_eq!(tags(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The parser accepts exactly the values the documented pattern matches.
        #[test]
        fn condition_parser_agrees_with_the_pattern(s in "[ \t,*W/\"a1#!~ ]{0,16}|\\PC{0,8}") {
            let re = regex::Regex::new(ETAG_CONDITION_PATTERN).unwrap();
            prop_assert_eq!(parse_condition(&s).is_some(), re.is_match(&s), "{:?}", s);
        }

        /// Any patch document yields a valid item or a client error (never a panic, never a 5xx,
        /// never an invalid item).
        #[test]
        fn merge_patch_yields_a_valid_item_or_a_client_error(patch in json_value()) {
            match apply_merge_patch(&item(), &patch) {
                Ok(n) => assert_valid(&n),
                Err(e) => prop_assert!(e.status().is_client_error(), "{e:?}"),
            }
        }

        /// Patches that only touch known fields with well-typed values behave like a PUT.
        #[test]
        fn field_patches_apply(name in "[a-zA-Z ]{0,110}", cents in -5i64..200_000_000_000, quantity in any::<i64>()) {
            let patch = json!({"name": name, "price": cents as f64 / 100.0, "quantity": quantity});
            match apply_merge_patch(&item(), &patch) {
                Ok(n) => {
                    assert_valid(&n);
                    prop_assert_eq!(n.name, name.trim());
                    prop_assert_eq!(n.price.cents(), cents);
                    prop_assert_eq!(n.quantity, quantity);
                }
                Err(ApiError::Validation(fields)) => prop_assert!(!fields.is_empty()),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
