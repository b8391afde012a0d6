//! Request extractors whose rejections are problem+json: JSON bodies, item ids, query strings.

use axum::{
    body::Bytes,
    extract::{
        FromRef, FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{BodyLimit, error::ApiError};
use crate::items::model::FieldError;

/// A JSON request body (`application/json` or any `application/*+json`), parsed strictly:
/// syntax errors are 400, type and shape errors 422 naming the field, oversized bodies 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge(limit)
            }
            other => ApiError::BadRequest(format!("cannot read request body: {other}")),
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else if ct.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: send application/json".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {essence:?} is not supported: send application/json"
        )))
    }
}

/// Parses JSON with field paths in errors; the whole input must be one JSON value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A shape error may be reported before the parser reaches a syntax error further on
        // (`[1,2` is "expected an object" before "unexpected end"): malformed JSON wins.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return json_error("", syntax);
        }
        let path = e.path().to_string();
        json_error(&path, e.into_inner())
    })?;
    de.end().map_err(|e| json_error("", e))?;
    Ok(value)
}

fn json_error(path: &str, err: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let full = err.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full).to_owned();
    match err.classify() {
        Category::Data => {
            // "unknown field `x`, expected ..." and "missing field `x`" name the field
            // themselves; serde_path_to_error reports the parent path for those.
            let named = message
                .strip_prefix("unknown field `")
                .or_else(|| message.strip_prefix("missing field `"))
                .or_else(|| message.strip_prefix("duplicate field `"))
                .and_then(|rest| rest.split('`').next());
            let field = match (named, path) {
                (Some(name), "." | "") => name.to_owned(),
                // serde_path_to_error names an unknown field itself, a missing one by its parent.
                (Some(name), p) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, "." | "") => "(body)".to_owned(),
                (None, p) => p.to_owned(),
            };
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {full}"))
        }
    }
}

/// The `{id}` path segment, which must be a UUID (400 otherwise).
pub struct ItemId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ItemId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("invalid item id: expected a UUID".into()))?;
        Uuid::try_parse(&raw)
            .map(ItemId)
            .map_err(|_| ApiError::BadRequest("invalid item id: expected a UUID".into()))
    }
}

/// A query string parsed into `T` (400 with the reason otherwise).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // serde_urlencoded decodes invalid UTF-8 lossily (to U+FFFD): refuse it instead.
        if parts
            .uri
            .query()
            .is_some_and(|q| !percent_decodes_to_utf8(q))
        {
            return Err(ApiError::BadRequest(
                "invalid query string: not valid UTF-8 once percent-decoded".into(),
            ));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// Whether every `&`-separated part of a query string is UTF-8 after percent-decoding.
fn percent_decodes_to_utf8(query: &str) -> bool {
    query.split('&').all(|part| {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        std::str::from_utf8(&out).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::model::ItemInput;

    fn err_of(body: &str) -> ApiError {
        match parse_json::<ItemInput>(body.as_bytes()) {
            Ok(_) => panic!("accepted {body}"),
            Err(e) => e,
        }
    }

    #[test]
    fn query_strings_must_be_utf8() {
        assert!(percent_decodes_to_utf8("q=caf%C3%A9&tag=a"));
        assert!(percent_decodes_to_utf8("q=%&x=%4"));
        assert!(percent_decodes_to_utf8(""));
        assert!(!percent_decodes_to_utf8("q=%ff"));
        assert!(!percent_decodes_to_utf8("a=1&q=%C3"));
    }

    #[test]
    fn classifies_json_errors() {
        assert!(matches!(err_of("{"), ApiError::BadRequest(_)));
        assert!(matches!(
            err_of(r#"{"name":"a","price":1,"quantity":1} x"#),
            ApiError::BadRequest(_)
        ));
        match err_of(r#"{"name":"a","price":1,"quantity":1,"colour":"red"}"#) {
            ApiError::Validation(v) => assert_eq!(v[0].field, "colour"),
            e => panic!("{e:?}"),
        }
        match err_of(r#"{"name":"a","price":"1","quantity":1}"#) {
            ApiError::Validation(v) => assert_eq!(v[0].field, "price"),
            e => panic!("{e:?}"),
        }
        match err_of(r#"{"price":1,"quantity":1}"#) {
            ApiError::Validation(v) => assert_eq!(v[0].field, "name"),
            e => panic!("{e:?}"),
        }
        match err_of(r#"{"name":"a","name":"b","price":1,"quantity":1}"#) {
            ApiError::Validation(v) => assert_eq!(v[0].field, "name"),
            e => panic!("{e:?}"),
        }
        match err_of(r#"{"name":"a","price":1,"quantity":1,"tags":["a",2]}"#) {
            ApiError::Validation(v) => assert_eq!(v[0].field, "tags[1]"),
            e => panic!("{e:?}"),
        }
    }
}
