//! Operational endpoints: liveness, readiness and the Prometheus scrape.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{metrics::Format, telemetry::error_chain};

/// The probes, and `/metrics` when `with_metrics` (not when `http.metrics_listen` moves it to
/// its own listener: then the API port answers `/metrics` with 404).
pub fn routes(with_metrics: bool) -> Router<AppState> {
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        probes.route("/metrics", get(metrics))
    } else {
        probes
    }
}

/// Probe answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok`, `ready`, `draining` or `unavailable`.
    pub status: &'static str,
    /// Why the instance is not ready, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness: 200 while the process can serve requests at all.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = ProbeStatus)))]
pub async fn healthz() -> Json<ProbeStatus> {
    Json(ProbeStatus {
        status: "ok",
        reason: None,
    })
}

/// Readiness: 200 only when the database answers in time and the instance is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve traffic", body = ProbeStatus),
        (status = 503, description = "Draining or database unreachable", body = ProbeStatus),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return not_ready("draining", "shutting down".into());
    }
    let timeout = state.ready_timeout;
    match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => Json(ProbeStatus {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "readiness: database check failed");
            not_ready("unavailable", "database check failed".into())
        }
        Err(_) => not_ready(
            "unavailable",
            format!("database did not answer within {}ms", timeout.as_millis()),
        ),
    }
}

fn not_ready(status: &'static str, reason: String) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ProbeStatus {
            status,
            reason: Some(reason),
        }),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text; the Prometheus text format 0.0.4 when Accept asks for text/plain",
        content((String = "application/openmetrics-text"), (String = "text/plain")))))]
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = state.metrics.render(state.pool.stats(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
