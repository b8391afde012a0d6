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

/// OpenMetrics text exposition format, as `prometheus-client` writes it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
    let timeout = state.config.database.ready_timeout;
    match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => Json(ProbeStatus {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "readiness: database check failed");
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
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(state.store.pool_stats());
    ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
}
