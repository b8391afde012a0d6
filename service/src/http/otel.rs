//! OpenTelemetry server spans: parent from `traceparent`, ids from the SDK, HTTP semantic
//! conventions (used only when spans are exported).

use axum::http::StatusCode;
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace::{TraceContext, TraceParent};

/// Makes `span` the OpenTelemetry server span of this request and returns its ids.
pub fn start_server_span(
    span: &Span,
    parent: Option<TraceParent>,
    method: &str,
    route: Option<&str>,
    path: &str,
    client: &str,
    user_agent: &str,
) -> TraceContext {
    if let Some(p) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.parent_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
    // Span name per the conventions: "{method} {route}", or just the method without a route.
    match route {
        Some(r) => {
            span.record("otel.name", format!("{method} {r}"));
            span.record("http.route", r);
        }
        None => {
            span.record("otel.name", method);
        }
    }
    span.record("otel.kind", "server");
    span.record("http.request.method", method);
    span.record("url.path", path);
    span.record("url.scheme", "http");
    span.record(
        "client.address",
        client.rsplit_once(':').map_or(client, |(ip, _)| ip),
    );
    if !user_agent.is_empty() {
        span.record("user_agent.original", user_agent);
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        // No exporter behind the span after all: fall back to our own ids.
        return TraceContext::new(parent);
    }
    TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        parent_span_id: parent.map(|p| p.parent_id),
        sampled: sc.is_sampled(),
    }
}

/// Records the outcome: status code, and error status for 5xx (4xx are the client's).
pub fn end_server_span(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
