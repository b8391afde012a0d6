//! Prometheus metrics: the registry, HTTP server metrics, rejections, pool and build info.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::items::store::PoolStats;

/// Labels of the per-request series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// Matched route template (`/v1/items/{id}`), or `unmatched`.
    pub route: String,
    pub status: u16,
}

/// Why the service itself turned a request away.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
    rustc: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// Histogram bucket bounds for request durations: 100 us to 10 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric the service exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub in_flight: Gauge,
    pub rejected: Family<RejectLabels, Counter>,
    pool: Family<PoolLabels, Gauge<i64, AtomicI64>>,
    pool_max: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_server_requests",
            "HTTP requests served, by method, route template and status",
            requests.clone(),
        );
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS.iter().copied())
        });
        registry.register_with_unit(
            "http_server_request_duration",
            "Time from request head received to response head sent",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_server_requests_in_flight",
            "Requests being served right now",
            in_flight.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "shipshape_requests_rejected",
            "Requests the service turned away itself, by reason",
            rejected.clone(),
        );
        let pool = Family::<PoolLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "shipshape_db_pool_connections",
            "Database pool connections by state (idle, in_use)",
            pool.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "shipshape_db_pool_max_connections",
            "Configured maximum size of the database pool",
            pool_max.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION.into(),
                revision: crate::GIT_REVISION.into(),
                rustc: crate::RUSTC_VERSION.into(),
            })
            .set(1);
        registry.register("shipshape_build_info", "Build information; always 1", build);
        Self {
            registry,
            requests,
            duration,
            in_flight,
            rejected,
            pool,
            pool_max,
        }
    }

    /// Counts a request the service rejected itself.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Renders the registry in the OpenMetrics text format, with pool figures taken now.
    pub fn render(&self, pool: PoolStats) -> String {
        let idle = i64::from(pool.idle);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(pool.size) - idle);
        self.pool_max.set(i64::from(pool.max));
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
