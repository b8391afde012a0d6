//! HTTP layer: the state requests share, the router, and the layers every request crosses.
//!
//! From the outside in, a request to `/v1/items` crosses: security headers (`hardening`), the
//! request id echo, observation (`observe`: trace context, metrics, the log line), panic
//! catching, CORS, the guard (`guard`: authentication, rate limiting, scopes), problem bodies
//! for axum's own errors, the body limit, then on API routes load shedding, the concurrency
//! limit and the timeout (tower), and finally the handler (`items`). docs/architecture.md draws it.

pub mod client_ip;
pub mod docs;
pub mod error;
pub mod extract;
pub mod guard;
pub mod hardening;
pub mod items;
pub mod observe;
pub mod otel;
pub mod probes;
pub mod ratelimit;
pub mod server;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, FromRef},
    response::IntoResponse,
    routing::get,
};
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

pub use error::ApiError;
use guard::Guard;

use crate::{
    config::Config,
    items::store::{Pool, SharedStore, Storage},
    metrics::Metrics,
    telemetry::TracePolicy,
};

/// Shared by every request. One `Arc`: axum clones the state for every request and every
/// middleware layer, so a clone is one reference-count increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds: what the request path reads, typed, and no more of the config.
pub struct Shared {
    pub store: SharedStore,
    /// The store's connection pool, for the pool metrics.
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// Authentication and rate limiting.
    pub guard: Guard,
    /// How requests are traced (set by `telemetry::init`).
    pub trace: TracePolicy,
    /// Largest accepted request body (`http.body_limit`).
    pub body_limit: BodyLimit,
    /// How long `/readyz` waits for the database (`database.ready_timeout`).
    pub ready_timeout: Duration,
    draining: AtomicBool,
}

/// `http.body_limit` in bytes, for the JSON body extractor's 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for SharedStore {
    fn from_ref(state: &AppState) -> SharedStore {
        state.store.clone()
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> BodyLimit {
        state.body_limit
    }
}

impl AppState {
    /// The state for `storage`, with the request-path values of `config`.
    pub fn new(
        storage: Storage,
        metrics: Arc<Metrics>,
        config: &Config,
        trace: TracePolicy,
    ) -> Self {
        Self(Arc::new(Shared {
            store: storage.items,
            pool: storage.pool,
            metrics,
            guard: Guard::new(&config.auth, &config.rate_limit),
            trace,
            body_limit: BodyLimit(config.http.body_limit),
            ready_timeout: config.database.ready_timeout,
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
pub fn router(state: AppState, config: &Config) -> Router {
    let http = &config.http;
    let api = Router::new()
        .route("/v1/items", get(items::list).post(items::create))
        .route(
            "/v1/items/{id}",
            get(items::get)
                .put(items::replace)
                .patch(items::patch)
                .delete(items::delete),
        )
        // API routes only: tower's load shed over a concurrency limit shared by every route
        // (`http.max_concurrent_requests`), and tower's timeout (`http.request_timeout`), both
        // answered 503 problem+json with `Retry-After`.
        .layer({
            let metrics = state.metrics.clone();
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |err: BoxError| {
                    let metrics = metrics.clone();
                    async move { limit_error(&metrics, err).into_response() }
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    http.max_concurrent_requests,
                ))
                .timeout(http.request_timeout)
        });
    // The layers every route crosses, as one tower stack in one router layer: each
    // `Router::layer` boxes every route again, and a request clones the whole chain of boxes
    // at every level it crosses (docs/performance.md#health-and-the-middleware-stack).
    // Outermost first: observation, panic catching, CORS (when origins are configured: it
    // answers preflights before authentication), the guard, problem bodies for axum's own
    // errors, the body limit.
    let stack = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            observe::panic_response,
        ))
        .option_layer(hardening::cors_layer(&config.security.cors_origins))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .map_response({
            let body_limit = state.body_limit;
            move |response| observe::problem_for_bare_errors(body_limit, response)
        })
        .layer(DefaultBodyLimit::max(http.body_limit));
    let app = Router::new()
        .merge(api)
        .merge(probes::routes(http.metrics_listen.is_none()))
        .merge(docs::routes(config))
        .fallback(not_found)
        .layer(stack);
    hardening::harden(app, config.security.hsts).with_state(state)
}

/// The answer for a request a tower limit turned away, counted by reason.
fn limit_error(metrics: &Metrics, err: BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        metrics.reject("load_shed");
        ApiError::Overloaded
    } else if err.is::<tower::timeout::error::Elapsed>() {
        metrics.reject("timeout");
        ApiError::Timeout
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed in a limit layer: {err}"))
    }
}

/// A separate router that serves only `/metrics` (for `http.metrics_listen`).
pub fn metrics_router(state: AppState, config: &Config) -> Router {
    let app = Router::new()
        .route("/metrics", get(probes::metrics))
        .fallback(not_found);
    hardening::harden(app, config.security.hsts).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}
