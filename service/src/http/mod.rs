//! HTTP layer: application state, the router, and how requests flow through middleware.

pub mod client_ip;
pub mod docs;
pub mod extract;
pub mod hardening;
pub mod middleware;
pub mod otel;
pub mod probes;
pub mod ratelimit;
pub mod server;
pub mod trace;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::DefaultBodyLimit, routing::get};
use tokio::sync::Semaphore;

use crate::{
    auth::middleware::Guard, config::Config, error::ApiError, items, items::store::ItemStore,
    metrics::Metrics,
};

/// Shared by every request. One `Arc`: every middleware layer clones the state for every
/// request, so a clone is one reference-count increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<State>);

/// What [`AppState`] holds.
pub struct State {
    pub store: Arc<dyn ItemStore>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Permits for concurrently served API requests (load shedding beyond).
    pub permits: Arc<Semaphore>,
    /// Authentication and rate limiting.
    pub guard: Guard,
    draining: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Arc<dyn ItemStore>, metrics: Arc<Metrics>, config: Arc<Config>) -> Self {
        let permits = Arc::new(Semaphore::new(config.http.max_concurrent_requests));
        let guard = Guard::new(&config);
        Self(Arc::new(State {
            store,
            metrics,
            config,
            permits,
            guard,
            draining: AtomicBool::new(false),
        }))
    }

    /// Marks the instance as shutting down: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The whole application: API routes behind load shedding and timeouts, operational routes
/// (probes, metrics, docs) always answered, everything observed and errors as problem+json.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/items", get(items::api::list).post(items::api::create))
        .route(
            "/v1/items/{id}",
            get(items::api::get)
                .put(items::api::replace)
                .patch(items::api::patch)
                .delete(items::api::delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::limits,
        ));
    let mut app = Router::new()
        .merge(api)
        .merge(probes::routes(state.config.http.metrics_listen.is_none()))
        .merge(docs::routes(&state.config))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.http.body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::problem_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware::guard,
        ));
    // CORS (when origins are configured) answers preflights before authentication.
    if let Some(cors) = hardening::cors_layer(&state.config.security.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        middleware::panic_response,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::observe,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        hardening::security_headers,
    ))
    .with_state(state)
}

/// A separate router that serves only `/metrics` (for `http.metrics_listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(probes::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hardening::security_headers,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}
