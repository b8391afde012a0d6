//! Observation of every request (trace context, metrics, the log line, trace headers), the
//! request id echo, and problem+json for the errors axum and panics produce themselves.

use std::{any::Any, net::SocketAddr, time::Instant};

use axum::body::HttpBody;
use axum::{
    body::Body,
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::{Instrument, field::Empty};

use super::{AppState, BodyLimit, error::ApiError, otel};
use crate::{
    metrics::RequestLabels,
    telemetry::{
        self, TracePolicy,
        context::RequestContext,
        trace::{TraceContext, TraceParent, parse_traceparent},
    },
};

pub static X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest `X-Request-Id` echoed back; longer or non-printable ones are ignored.
const MAX_REQUEST_ID: usize = 128;

/// Bytes of `User-Agent` kept for the log line and the span.
const MAX_USER_AGENT: usize = 256;

/// What the log line, the metrics and the span say of a request, read before it is served.
struct Facts {
    /// The caller's trace, from a valid `traceparent`.
    parent: Option<TraceParent>,
    method: &'static str,
    /// Matched route template, or `unmatched`.
    route: String,
    path: String,
    /// A valid `X-Request-Id` (invalid ones were dropped by [`drop_invalid_request_id`]).
    request_id: Option<HeaderValue>,
    user_agent: String,
    client: String,
    request_size: u64,
}

impl Facts {
    fn read(req: &Request) -> Facts {
        let headers = req.headers();
        Facts {
            parent: headers
                .get(&TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_traceparent),
            method: method_label(req.method()),
            route: req
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned()),
            path: req.uri().path().to_owned(),
            request_id: headers.get(&X_REQUEST_ID).cloned(),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| truncate(s, MAX_USER_AGENT).to_owned())
                .unwrap_or_default(),
            client: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            request_size: content_length(headers),
        }
    }
}

/// Continues the caller's trace or starts one (head-sampled as `policy` says), and creates the
/// request's span when something reads it. Returns the trace context, the span (disabled when
/// nothing reads it) and whether the request is exported.
fn start_trace(policy: TracePolicy, f: &Facts) -> (TraceContext, tracing::Span, bool) {
    let mut ctx = TraceContext::new(f.parent);
    if f.parent.is_none() {
        // Head sampling of a trace we start; a caller's decision (the flag) is followed.
        let draw = u64::from_le_bytes(ctx.trace_id[8..].try_into().unwrap_or_default());
        ctx.sampled = policy.sample_new_trace(draw);
    }
    let export = policy.exporting() && ctx.sampled;
    // A tracing span only when something reads it: the exporter (sampled requests) or the
    // human log format. JSON lines take the request's fields from the task-local context, so
    // an unexported request pays for no span (docs/observability.md#overhead).
    if !export && !policy.logs_use_spans() {
        return (ctx, tracing::Span::none(), false);
    }
    let span = telemetry::request_span(export, || {
        // Fields for the human log format (recorded only for it) and for the exporter: the
        // span name and kind and the HTTP semantic-convention attributes (otel.rs).
        tracing::info_span!(
            "request",
            trace_id = Empty,
            span_id = Empty,
            method = Empty,
            route = Empty,
            otel.name = Empty,
            otel.kind = Empty,
            http.request.method = Empty,
            http.route = Empty,
            url.path = Empty,
            url.scheme = Empty,
            client.address = Empty,
            user_agent.original = Empty,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        )
    });
    if export {
        let matched = (f.route != "unmatched").then_some(f.route.as_str());
        ctx = otel::start_server_span(
            &span,
            f.parent,
            f.method,
            matched,
            &f.path,
            &f.client,
            &f.user_agent,
        );
    }
    if policy.logs_use_spans() {
        let (trace_id, span_id) = (ctx.trace_id_hex(), ctx.span_id_hex());
        otel::record(
            &span,
            [
                ("trace_id", Some(&trace_id.as_str())),
                ("span_id", Some(&span_id.as_str())),
                ("method", Some(&f.method)),
                ("route", Some(&f.route.as_str())),
            ],
        );
    }
    (ctx, span, export)
}

/// Outermost layer: continues or starts the trace, serves the request inside its context (and
/// span, if any), then records metrics, emits one `request completed` log line and sets the
/// trace headers. What it uses arrives in `state`: the metrics, the trace policy, draining.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let facts = Facts::read(&req);
    let (ctx, span, export) = start_trace(state.trace, &facts);
    let Facts {
        method,
        route,
        path,
        request_id,
        user_agent,
        client,
        request_size,
        ..
    } = facts;
    let request = RequestContext {
        trace_id: ctx.trace_id,
        span_id: ctx.span_id,
        method,
        route: route.clone(),
        exported: export,
    };
    let server_span = export.then(|| span.clone());
    // Everything up to the log line runs inside the request's context (and span, if any), so
    // the `request completed` line carries them like every other line of the request.
    let mut response = request
        .scope(async {
            let in_flight = state.metrics.in_flight_guard();
            let response = next.run(req).await;
            drop(in_flight);
            let status = response.status();
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                state.metrics.reject("validation");
            }
            let elapsed = start.elapsed();
            let response_size = response.body().size_hint().exact().unwrap_or(0);
            state.metrics.observe_request(
                RequestLabels {
                    method: method.to_owned(),
                    route,
                    status: status.as_u16(),
                },
                elapsed,
                request_size,
                response_size,
            );
            // `&str` values, not `%display`: a string is copied as it is, without the
            // formatting machinery.
            tracing::info!(
                path = path.as_str(),
                status = status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                request_size,
                response_size,
                client = client.as_str(),
                user_agent = user_agent.as_str(),
                request_id = request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                "request completed"
            );
            response
        })
        .instrument(span)
        .await;
    if let Some(span) = server_span {
        otel::end_server_span(&span, response.status());
    }

    let headers = response.headers_mut();
    // Room for the two trace headers and the hardening layer's five (`hardening::harden`) in
    // one allocation, not in the map's growth steps.
    headers.reserve(8);
    if let Ok(v) = HeaderValue::from_bytes(&ctx.trace_id_hex_bytes()) {
        headers.insert(X_TRACE_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&ctx.traceparent_bytes()) {
        headers.insert(TRACEPARENT.clone(), v);
    }
    if state.is_draining() {
        // Clients reconnect for their next request, so no keep-alive connection is idle in
        // their pool when the listener closes.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Drops an `X-Request-Id` that is empty, longer than 128 bytes or not visible ASCII, so the
/// echo (`hardening::harden`) and the log line reflect nothing unbounded.
pub fn drop_invalid_request_id<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let valid = req
        .headers()
        .get(&X_REQUEST_ID)
        .is_none_or(|v| v.len() <= MAX_REQUEST_ID && v.to_str().is_ok_and(|s| !s.is_empty()));
    if !valid {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    req
}

/// Gives responses that axum produces itself (405 with `Allow`, body-limit 413) a problem+json
/// body; handler errors already have one. A plain response map (tower's `map_response`, no
/// boxed future), given the body limit the 413 names.
pub fn problem_for_bare_errors(body_limit: BodyLimit, response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(super::error::PROBLEM_JSON.as_bytes())
        });
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut problem = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(
            "this method is not supported on this resource; the Allow header lists those that are"
                .into(),
        )
        .into_response(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body_limit.0).into_response(),
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource".into()).into_response(),
        _ => return response,
    };
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}

/// A handler panicked: answer 500 problem+json (the panic itself is logged by the hook).
pub fn panic_response(_err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// Bounded method label: the standard methods, everything else `_OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn content_length(headers: &axum::http::HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        for (m, label) in [
            ("GET", "GET"),
            ("HEAD", "HEAD"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("PATCH", "PATCH"),
            ("DELETE", "DELETE"),
            ("OPTIONS", "OPTIONS"),
            ("TRACE", "TRACE"),
            ("CONNECT", "CONNECT"),
            ("BREW", "_OTHER"),
        ] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                label
            );
        }
    }

    #[test]
    fn invalid_request_ids_are_dropped_before_the_echo() {
        let with = |v: &[u8]| {
            let mut req = axum::http::Request::new(());
            req.headers_mut()
                .insert(&X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
            drop_invalid_request_id(req)
                .headers()
                .get(&X_REQUEST_ID)
                .is_some()
        };
        assert!(with(b"req-123"));
        assert!(!with(b""));
        assert!(!with("r".repeat(129).as_bytes()));
        assert!(!with(&[b'a', 0xe9]));
        assert!(
            !drop_invalid_request_id(axum::http::Request::new(()))
                .headers()
                .contains_key(&X_REQUEST_ID)
        );
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("curl/8.0", 256), "curl/8.0");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting at byte 2 would split it.
        assert_eq!(truncate("aéb", 2), "a");
        assert_eq!(truncate("aéb", 3), "aé");
        assert_eq!(truncate("", 0), "");
    }
}
