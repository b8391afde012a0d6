//! Response hardening on every response (content sniffing, framing, referrer, caching, CSP,
//! optional HSTS, no server banner) and CORS from an explicit origin allow-list.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{AppState, middleware::TRACEPARENT, middleware::X_REQUEST_ID};

/// The API returns JSON only: nothing may load, run or frame it.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Swagger UI at `/docs`: its own scripts and styles (plus the inline styles it sets), data:
/// images, and fetching `/openapi.json` and the API from the same origin.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";
/// One year, subdomains included (sent only with `security.hsts = true`).
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Outermost layer: sets the hardening headers on whatever response the stack produced.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let docs = is_docs(req.uri().path());
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if docs { DOCS_CSP } else { API_CSP }),
    );
    if !docs {
        // API answers are per-client and change: never store them in shared or private caches
        // (ETag revalidation still works through If-None-Match).
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.config.security.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    h.remove(header::SERVER);
    h.remove(HeaderName::from_static("x-powered-by"));
    response
}

fn is_docs(path: &str) -> bool {
    path == "/docs" || path.starts_with("/docs/")
}

/// Parses `security.cors_origins` into header values (`scheme://host[:port]`, no wildcard).
pub fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, String> {
    origins
        .iter()
        .map(|o| {
            if o.contains('*') {
                return Err(format!(
                    "{o:?}: wildcards are not allowed, list each origin"
                ));
            }
            let url = url::Url::parse(o).map_err(|_| format!("{o:?} is not an origin URL"))?;
            let origin = url.origin();
            if !origin.is_tuple() || !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{o:?} is not an http(s) origin"));
            }
            let text = origin.ascii_serialization();
            if text != o.trim_end_matches('/') {
                return Err(format!(
                    "{o:?} must be just scheme://host[:port], e.g. {text:?}"
                ));
            }
            HeaderValue::from_str(&text).map_err(|_| format!("{o:?} is not a valid origin"))
        })
        .collect()
}

/// The CORS layer for the configured origins; `None` (CORS off) when there are none.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins = parse_origins(origins).ok()?;
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static("idempotency-key"),
                X_REQUEST_ID.clone(),
                TRACEPARENT.clone(),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-trace-id"),
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_exact() {
        assert!(parse_origins(&["https://app.example.com".into()]).is_ok());
        assert!(parse_origins(&["http://localhost:3000".into()]).is_ok());
        for bad in [
            "*",
            "https://app.example.com/path",
            "app.example.com",
            "file:///x",
            "https://*.example.com",
        ] {
            assert!(parse_origins(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(cors_layer(&[]).is_none());
    }
}
