//! Response hardening on every response (content sniffing, framing, referrer, caching, CSP,
//! optional HSTS, no server banner) and CORS from an explicit origin allow-list.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, Method, Response, header},
};
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::PropagateRequestIdLayer,
    set_header::SetResponseHeaderLayer,
};

use super::observe::{TRACEPARENT, X_REQUEST_ID, drop_invalid_request_id};
use crate::config::Origin;

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

/// The outermost layers, as one tower stack (one layer of the router, so one boxed route per
/// request, not one per header): tower-http's set-header puts the hardening headers on whatever
/// response the stack produced (the API's CSP and `Cache-Control: no-store` unless the docs
/// routes set their own CSP, [`docs_csp`]; HSTS only with `security.hsts`), and tower-http's
/// propagate layer echoes a valid `X-Request-Id` (an invalid one is dropped first).
pub fn harden<S: Clone + Send + Sync + 'static>(router: Router<S>, hsts: bool) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .option_layer(hsts.then(|| {
                SetResponseHeaderLayer::overriding(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS),
                )
            }))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(API_CSP),
            ))
            // API answers are per-client and change: never store them in shared or private
            // caches (ETag revalidation still works through If-None-Match). Docs may be cached.
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                |r: &Response<Body>| {
                    let docs = r.headers().get(header::CONTENT_SECURITY_POLICY)
                        == Some(&HeaderValue::from_static(DOCS_CSP));
                    (!docs).then_some(HeaderValue::from_static("no-store"))
                },
            ))
            .map_request(drop_invalid_request_id)
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone())),
    )
}

/// The docs routes' own CSP (Swagger UI's scripts and styles), set on their responses.
pub fn docs_csp() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    )
}

/// The CORS layer for the configured origins; `None` (CORS off) when there are none.
pub fn cors_layer(origins: &[Origin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(
                origins.iter().map(|o| o.header_value().clone()),
            ))
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
    fn cors_is_off_without_origins() {
        assert!(cors_layer(&[]).is_none());
        assert!(cors_layer(&["https://app.example.com".parse().unwrap()]).is_some());
    }
}
