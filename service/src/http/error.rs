//! API errors: one `ApiError` type and its single mapping to RFC 9457 problem+json responses.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::AuthError,
    items::{model::FieldError, store::StoreError},
    telemetry::{error_chain, trace::current_trace_id},
};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// RFC 9457 problem details, as every error response carries them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    #[schema(example = "urn:shipshape:problem:validation")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Trace id of the request (also in the `X-Trace-ID` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Invalid fields (validation errors only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body failed validation")]
    Validation(Vec<FieldError>),
    /// Query parameters out of range (422, like body validation, but said of the query).
    #[error("the query failed validation: {}", field_names(.0))]
    InvalidQuery(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// No valid bearer token (401 with an RFC 6750 `WWW-Authenticate` challenge).
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The token lacks the scope the operation needs (403 `insufficient_scope`).
    #[error("this operation needs a token with the `{0}` scope")]
    InsufficientScope(&'static str),
    /// The client exceeded its rate limit (429 with `Retry-After` and `RateLimit` headers).
    #[error("too many requests: retry in {retry_after} s")]
    RateLimited {
        retry_after: u64,
        policy: String,
        status: String,
    },
    #[error("the service is overloaded, retry later")]
    Overloaded,
    #[error("the request took too long and was cancelled")]
    Timeout,
    #[error("the database is unavailable, retry later")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Validation(_) | InvalidQuery(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Validation failed",
            ),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            ),
            PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                "insufficient-scope",
                "Insufficient scope",
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
            ),
            Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The status code this error maps to.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            ApiError::Unavailable(err)
        } else {
            ApiError::Internal(err.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if status.is_server_error() {
            // Full cause chain once, here, where the error is turned into a response.
            tracing::error!(error = %error_chain(&self), status = status.as_u16(), "request failed");
        }
        let errors = match &self {
            ApiError::Validation(errors) | ApiError::InvalidQuery(errors) => errors.clone(),
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("urn:shipshape:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            trace_id: current_trace_id(),
            errors,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        match &self {
            ApiError::Unauthorized(e) => {
                headers.insert(header::WWW_AUTHENTICATE, bearer_challenge(e));
            }
            ApiError::InsufficientScope(scope) => {
                let v = format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", \
                     error_description=\"{}\", scope=\"{scope}\"",
                    self
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::RateLimited {
                retry_after,
                policy,
                status,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                for (name, value) in [("ratelimit-policy", policy), ("ratelimit", status)] {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        headers.insert(name, v);
                    }
                }
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorKind(slug));
        response
    }
}

/// "`limit`" or "`tag`, `q`": the parameters named in a query validation error.
fn field_names(errors: &[FieldError]) -> String {
    let names: Vec<String> = errors.iter().map(|e| format!("`{}`", e.field)).collect();
    names.join(", ")
}

/// The `realm` of the bearer challenges.
pub const REALM: &str = "shipshape";

/// RFC 6750 challenge: no `error` when no token was sent, `invalid_token` otherwise. The
/// description is one of the fixed `AuthError` texts (no quotes or backslashes in them).
fn bearer_challenge(e: &AuthError) -> HeaderValue {
    let v = match e {
        AuthError::Missing => format!("Bearer realm=\"{REALM}\""),
        e => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            e.to_string().replace(['"', '\\'], "'")
        ),
    };
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer realm=\"shipshape\""))
}

/// Marks an error response with its problem slug, for metrics and the request log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::Value;

    use super::*;

    async fn render(err: ApiError) -> (Response, Value) {
        let mut response = err.into_response();
        let body = std::mem::take(response.body_mut());
        let bytes = to_bytes(body, 1 << 20).await.unwrap();
        (response, serde_json::from_slice(&bytes).unwrap())
    }

    fn header<'a>(r: &'a Response, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn every_error_is_problem_json_with_its_status_and_slug() {
        let io = || sqlx::Error::Io(std::io::Error::other("down"));
        for (err, status, slug) in [
            (
                ApiError::Validation(vec![FieldError::new("name", "bad")]),
                422,
                "validation",
            ),
            (
                ApiError::InvalidQuery(vec![FieldError::new("limit", "bad")]),
                422,
                "validation",
            ),
            (ApiError::BadRequest("x".into()), 400, "bad-request"),
            (ApiError::NotFound("x".into()), 404, "not-found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (
                ApiError::IdempotencyKeyReused,
                422,
                "idempotency-key-reused",
            ),
            (
                ApiError::PreconditionFailed("x".into()),
                412,
                "precondition-failed",
            ),
            (ApiError::PayloadTooLarge(1024), 413, "payload-too-large"),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported-media-type",
            ),
            (
                ApiError::MethodNotAllowed("x".into()),
                405,
                "method-not-allowed",
            ),
            (
                ApiError::Unauthorized(AuthError::Expired),
                401,
                "unauthorized",
            ),
            (
                ApiError::InsufficientScope("items:write"),
                403,
                "insufficient-scope",
            ),
            (ApiError::Overloaded, 503, "overloaded"),
            (ApiError::Timeout, 503, "timeout"),
            (
                ApiError::from(StoreError::Database(io())),
                503,
                "database-unavailable",
            ),
            (
                ApiError::from(StoreError::Corrupt("tags".into())),
                500,
                "internal",
            ),
        ] {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            let (r, body) = render(err).await;
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(header(&r, "content-type"), PROBLEM_JSON);
            assert_eq!(body["type"], format!("urn:shipshape:problem:{slug}"));
            assert_eq!(body["status"], status);
            assert_eq!(r.extensions().get::<ErrorKind>().map(|k| k.0), Some(slug));
            assert_eq!(header(&r, "retry-after") == "1", status == 503, "{slug}");
        }
    }

    #[tokio::test]
    async fn validation_errors_list_the_fields() {
        let (_, body) = render(ApiError::InvalidQuery(vec![
            FieldError::new("tag", "bad"),
            FieldError::new("q", "long"),
        ]))
        .await;
        assert_eq!(body["detail"], "the query failed validation: `tag`, `q`");
        assert_eq!(body["errors"][1]["field"], "q");
    }

    #[tokio::test]
    async fn auth_errors_carry_rfc_6750_challenges() {
        let (r, _) = render(ApiError::Unauthorized(AuthError::Missing)).await;
        assert_eq!(header(&r, "www-authenticate"), "Bearer realm=\"shipshape\"");
        let (r, _) = render(ApiError::Unauthorized(AuthError::Expired)).await;
        assert_eq!(
            header(&r, "www-authenticate"),
            "Bearer realm=\"shipshape\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let (r, _) = render(ApiError::InsufficientScope("items:write")).await;
        let challenge = header(&r, "www-authenticate");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.contains("scope=\"items:write\""), "{challenge}");
    }

    #[tokio::test]
    async fn rate_limited_answers_say_when_to_retry() {
        let (r, body) = render(ApiError::RateLimited {
            retry_after: 3,
            policy: "\"default\";q=100;w=2".into(),
            status: "\"default\";r=0;t=3".into(),
        })
        .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&r, "retry-after"), "3");
        assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=100;w=2");
        assert_eq!(header(&r, "ratelimit"), "\"default\";r=0;t=3");
        assert_eq!(body["detail"], "too many requests: retry in 3 s");
    }
}
