//! Prometheus metrics: the registry, HTTP server metrics, rejections, pool and build info.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

/// Connection-pool figures, taken at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The histograms the store records in: waits for a connection (or for room in SQLite's write
/// queue), and SQLite's group commits.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub acquire_wait: Histogram,
    /// Writes per committed group (SQLite).
    pub commit_group_size: Histogram,
    /// Time from a group's BEGIN to its durable COMMIT (SQLite).
    pub commit_duration: Histogram,
}

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

/// Histogram bucket bounds for body sizes: 0 to 1 MiB.
const SIZE_BUCKETS: [f64; 9] = [
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Histogram bucket bounds for waiting on a pooled database connection: 10 us to 5 s.
/// Writes per group commit: powers of two up to the largest configurable group.
const GROUP_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

const ACQUIRE_BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Which text format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics unless the `Accept` header asks for `text/plain` and not OpenMetrics.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if !a.contains("application/openmetrics-text") && a.contains("text/plain") => {
                Format::Prometheus
            }
            _ => Format::OpenMetrics,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A request being served; see [`Metrics::in_flight_guard`].
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the service exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub request_size: Family<RequestLabels, Histogram>,
    pub response_size: Family<RequestLabels, Histogram>,
    in_flight: Gauge,
    pub rejected: Family<RejectLabels, Counter>,
    pool: Family<PoolLabels, Gauge<i64, AtomicI64>>,
    pool_max: Gauge,
    store: StoreMetrics,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let store = StoreMetrics {
            acquire_wait: Histogram::new(ACQUIRE_BUCKETS.iter().copied()),
            commit_group_size: Histogram::new(GROUP_BUCKETS.iter().copied()),
            commit_duration: Histogram::new(ACQUIRE_BUCKETS.iter().copied()),
        };
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
            Unit::Seconds,
            duration.clone(),
        );
        let size = || Histogram::new(SIZE_BUCKETS.iter().copied());
        let request_size = Family::<RequestLabels, Histogram>::new_with_constructor(size);
        registry.register_with_unit(
            "http_server_request_body_size",
            "Size of request bodies as declared by Content-Length",
            Unit::Bytes,
            request_size.clone(),
        );
        let response_size = Family::<RequestLabels, Histogram>::new_with_constructor(size);
        registry.register_with_unit(
            "http_server_response_body_size",
            "Size of response bodies",
            Unit::Bytes,
            response_size.clone(),
        );
        registry.register_with_unit(
            "shipshape_db_pool_acquire_duration",
            "Time spent waiting for a pooled database connection",
            Unit::Seconds,
            store.acquire_wait.clone(),
        );
        registry.register(
            "shipshape_db_commit_group_size",
            "Writes committed together in one transaction and one fsync (SQLite group commit)",
            store.commit_group_size.clone(),
        );
        registry.register_with_unit(
            "shipshape_db_commit_duration",
            "Time from a write group's BEGIN to its durable COMMIT (SQLite group commit)",
            Unit::Seconds,
            store.commit_duration.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
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
            request_size,
            response_size,
            in_flight,
            rejected,
            pool,
            pool_max,
            store,
        }
    }

    /// The histograms the store records in.
    pub fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// Counts a request as in flight until the guard is dropped, also when the request future is
    /// dropped half-way (the client went away).
    pub fn in_flight_guard(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Counts a served request and records its duration and body sizes.
    pub fn observe_request(
        &self,
        labels: RequestLabels,
        elapsed: std::time::Duration,
        request_size: u64,
        response_size: u64,
    ) {
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.request_size
            .get_or_create(&labels)
            .observe(request_size as f64);
        self.response_size
            .get_or_create(&labels)
            .observe(response_size as f64);
    }

    /// Counts a request the service rejected itself.
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Renders the registry in `format`, with pool figures taken now.
    pub fn render(&self, pool: PoolStats, format: Format) -> String {
        let idle = i64::from(pool.idle);
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(pool.size) - idle);
        self.pool_max.set(i64::from(pool.max));
        let mut out = String::with_capacity(8 * 1024);
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if let Err(e) = encoded {
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

/// The standard `process_*` metrics, read from `/proc/self` at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl ProcessCollector {
    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> std::fmt::Result {
        let g = ConstGauge::new(value);
        g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        let Ok(stat) = me.stat() else { return Ok(()) };
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size() as f64;
        let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let e = &mut encoder;
        Self::gauge(
            e,
            "process_resident_memory",
            "Resident memory size in bytes",
            Some(&Unit::Bytes),
            stat.rss as f64 * page,
        )?;
        Self::gauge(
            e,
            "process_virtual_memory",
            "Virtual memory size in bytes",
            Some(&Unit::Bytes),
            stat.vsize as f64,
        )?;
        Self::gauge(
            e,
            "process_threads",
            "Number of OS threads in the process",
            None,
            stat.num_threads as f64,
        )?;
        if let Ok(boot) = procfs::boot_time_secs() {
            let start = boot as f64 + stat.starttime as f64 / ticks;
            Self::gauge(
                e,
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(&Unit::Seconds),
                start,
            )?;
        }
        if let Ok(fds) = me.fd_count() {
            Self::gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors",
                None,
                fds as f64,
            )?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            Self::gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_request_leaves_the_in_flight_gauge() {
        let metrics = Metrics::new();
        let served = metrics.in_flight_guard();
        let cancelled = metrics.in_flight_guard();
        assert_eq!(metrics.in_flight.get(), 2);
        drop(cancelled);
        drop(served);
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[test]
    fn negotiates_the_text_format() {
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }

    #[test]
    fn renders_both_formats_with_process_metrics() {
        let m = Metrics::default();
        let om = m.render(PoolStats::default(), Format::OpenMetrics);
        assert!(om.contains("# TYPE process_cpu_seconds counter"), "{om}");
        assert!(om.contains("process_resident_memory_bytes "));
        assert!(om.contains("process_open_fds "));
        assert!(om.ends_with("# EOF\n"));
        let prom = m.render(PoolStats::default(), Format::Prometheus);
        assert!(
            prom.contains("# TYPE process_cpu_seconds_total counter"),
            "{prom}"
        );
        assert!(!prom.contains("# EOF"));
    }
}
