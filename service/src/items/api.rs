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
    cursor,
    model::{Item, ItemInput},
    store::{CreateOutcome, Idempotency, ListQuery, WriteOutcome, now_micros},
};
use crate::{
    error::{ApiError, FieldError, Problem},
    http::{
        AppState,
        extract::{ItemId, JsonBody, QueryParams, parse_json},
    },
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
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Only items carrying this tag.
    pub tag: Option<String>,
    /// Only items whose name contains this text (case-insensitive).
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

fn condition(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Condition>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut tags = Vec::new();
    for v in values {
        let s = v
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("invalid {name} header")))?;
        for tag in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(Some(Condition::Any));
            }
            tags.push(tag.to_owned());
        }
    }
    Ok(Some(Condition::Tags(tags)))
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
    state: &AppState,
    id: Uuid,
    headers: &HeaderMap,
) -> Result<Option<i64>, ApiError> {
    let Some(cond) = condition(headers, header::IF_MATCH)? else {
        return Ok(None);
    };
    let current = state.store.get(id).await?.ok_or_else(not_found)?;
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
    params(("Idempotency-Key" = Option<String>, Header, description = "Client-chosen key (1-255 printable ASCII) making retries safe")),
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
    State(state): State<AppState>,
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
    match state.store.create(&item, idempotency.as_ref()).await? {
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
#[utoipa::path(get, path = "/v1/items", tag = "items",
    params(ListParams),
    responses(
        (status = 200, description = "A page of items", body = ItemPage),
        (status = 400, description = "Invalid cursor or query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Parameter out of range", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ItemPage>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )]));
    }
    let after = match params.cursor.as_deref() {
        None | Some("") => Uuid::nil(),
        Some(c) => {
            cursor::decode(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?
        }
    };
    if let Some(tag) = &params.tag
        && !super::model::is_valid_tag(tag)
    {
        return Err(ApiError::Validation(vec![FieldError::new(
            "tag",
            "must be 1 to 32 characters of a-z, 0-9 and -",
        )]));
    }
    let q = params.q.filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "q",
            "must be at most 100 characters",
        )]));
    }
    let limit = limit as u32;
    let mut items = state
        .store
        .list(&ListQuery {
            after,
            limit: limit + 1,
            tag: params.tag,
            name_contains: q.map(|q| q.to_lowercase()),
        })
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|i| cursor::encode(i.id))
    } else {
        None
    };
    Ok(Json(ItemPage { items, next_cursor }))
}

/// Get one item; `If-None-Match` with its current ETag gives 304.
#[utoipa::path(get, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client has")),
    responses(
        (status = 200, description = "The item", body = Item, headers(("ETag" = String, description = "Entity tag"))),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ItemId(id): ItemId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let item = state.store.get(id).await?.ok_or_else(not_found)?;
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
           ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    responses(
        (status = 200, description = "Replaced", body = Item, headers(("ETag" = String, description = "New entity tag"))),
        (status = 400, description = "Invalid id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "ETag does not match", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn replace(
    State(state): State<AppState>,
    ItemId(id): ItemId,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ItemInput>,
) -> Result<Response, ApiError> {
    let fields = input.into_new_item().map_err(ApiError::Validation)?;
    let expected = check_if_match(&state, id, &headers).await?;
    match state
        .store
        .update(id, &fields, expected, now_micros())
        .await?
    {
        WriteOutcome::Done(item) => Ok(item_response(StatusCode::OK, &item)),
        WriteOutcome::NotFound => Err(not_found()),
        WriteOutcome::VersionMismatch => Err(stale()),
    }
}

/// Change some fields with a JSON merge patch (RFC 7396); `null` removes optional fields.
#[utoipa::path(patch, path = "/v1/items/{id}", tag = "items",
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields to change (RFC 7396)"),
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
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
    State(state): State<AppState>,
    ItemId(id): ItemId,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let if_match = condition(&headers, header::IF_MATCH)?;
    for _ in 0..PATCH_ATTEMPTS {
        let current = state.store.get(id).await?.ok_or_else(not_found)?;
        if let Some(cond) = &if_match
            && !cond.matches_strong(&current.etag())
        {
            return Err(stale());
        }
        let mut doc = current.to_input_json();
        json_patch::merge(&mut doc, &patch);
        let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.into()))?;
        let input: ItemInput = parse_json(&bytes)?;
        let fields = input.into_new_item().map_err(ApiError::Validation)?;
        match state
            .store
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

/// Delete an item; `If-Match` makes it conditional (412 when stale).
#[utoipa::path(delete, path = "/v1/items/{id}", tag = "items",
    params(("id" = String, Path, format = Uuid, description = "Item id"),
           ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "ETag does not match", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    ItemId(id): ItemId,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = check_if_match(&state, id, &headers).await?;
    match state.store.delete(id, expected).await? {
        WriteOutcome::Done(()) => Ok(StatusCode::NO_CONTENT),
        WriteOutcome::NotFound => Err(not_found()),
        WriteOutcome::VersionMismatch => Err(stale()),
    }
}
