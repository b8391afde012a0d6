//! Logging and tracing set-up: JSON lines (or a human format) filtered with `EnvFilter`, and
//! optional OpenTelemetry span export over OTLP/HTTP.

pub mod context;
mod filter;
mod json;
pub mod trace;
mod writer;

use anyhow::Context as _;
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// How requests are traced, decided once by [`init`] and handed to the HTTP layer that observes
/// requests (`http::observe`): whether spans are exported, whether the log format shows request
/// spans, and the head-sampling share of new traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracePolicy {
    exporting: bool,
    log_spans: bool,
    /// A random draw below this samples a new trace (`u64::MAX` = every trace).
    sample_threshold: u64,
}

impl Default for TracePolicy {
    /// JSON lines, no export: what a process without [`init`] (a test) gets.
    fn default() -> Self {
        Self {
            exporting: false,
            log_spans: false,
            sample_threshold: u64::MAX,
        }
    }
}

impl TracePolicy {
    /// True when an OpenTelemetry exporter is installed (trace ids then come from the SDK).
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// True when every request needs a tracing span for its log lines, exported or not (the
    /// human format; JSON lines take the request fields from [`context`]).
    pub fn logs_use_spans(&self) -> bool {
        self.log_spans
    }

    /// Head sampling for a trace this service starts: `draw` is random (the trace id's low half).
    pub fn sample_new_trace(&self, draw: u64) -> bool {
        self.sample_threshold == u64::MAX || draw < self.sample_threshold
    }

    /// The threshold for `telemetry.sample_ratio` (2^64 * ratio, saturating: 1.0 = all).
    fn threshold(ratio: Option<f64>) -> u64 {
        match ratio {
            Some(r) if r < 1.0 => (r * 18_446_744_073_709_551_616.0) as u64,
            _ => u64::MAX,
        }
    }
}

/// Creates the request span with `make`, visible to the span exporter only if `sampled`.
/// Unsampled requests (and their database spans) then never reach the OpenTelemetry layer,
/// so they cost what they cost without export (docs/observability.md#overhead).
pub fn request_span(sampled: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    filter::ExportNextRequest::set(sampled);
    let span = make();
    filter::ExportNextRequest::set(false);
    span
}

/// `error: cause: cause ...`, the whole `source()` chain on one line, for log fields.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Keeps the log writer and the exporter alive; `shutdown` flushes both.
#[must_use]
pub struct Telemetry {
    policy: TracePolicy,
    provider: Option<SdkTracerProvider>,
    _log_writer: writer::FlushGuard,
}

impl Telemetry {
    /// How requests are traced with this set-up.
    pub fn policy(&self) -> TracePolicy {
        self.policy
    }

    /// Flushes and stops span export (call once, at the end of shutdown).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            match provider.shutdown() {
                Ok(()) => tracing::info!(phase = "telemetry", "shutdown: spans flushed"),
                Err(e) => tracing::warn!(error = %e, "shutdown: flushing spans failed"),
            }
        }
    }
}

/// Installs the global subscriber. Call once, before anything logs. With `export`, spans go to
/// the OTLP endpoint that `telemetry` (or the standard environment) names, if any.
pub fn init(
    log: &LogConfig,
    telemetry: &TelemetryConfig,
    export: bool,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(log.level.as_str())?;
    // Log lines are written in batches by a background thread (see `writer`), so request
    // handlers never block on stdout.
    let (writer, log_writer) =
        writer::batch_writer(std::io::stdout()).context("starting the log writer thread")?;
    let fmt_layer = match log.format {
        // Our own layer for the one JSON schema (see `json` for why).
        LogFormat::Json => json::JsonLayer::new(writer).with_filter(filter).boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_filter(filter)
            .boxed(),
    };
    let log_spans = log.format == LogFormat::Pretty;
    let endpoint = telemetry.traces_endpoint().filter(|_| export);
    let provider = match &endpoint {
        Some(endpoint) => Some(provider(
            endpoint,
            &telemetry.service_name,
            telemetry.sample_ratio,
        )?),
        None => None,
    };
    // The exporter sees sampled request spans (see `request_span`), the database spans inside
    // them whatever the log level, and warnings and errors there as span events; the `request
    // completed` line is the span's own attributes again and is not exported twice. Thread,
    // busy/idle-time and context-activation bookkeeping is off: nothing here reads it, and it
    // cost CPU per span.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("shipshape"))
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter::export_filter())
    });
    tracing_subscriber::registry()
        .with(filter::SpanGate { log_spans })
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    let policy = TracePolicy {
        exporting: endpoint.is_some(),
        log_spans,
        sample_threshold: TracePolicy::threshold(telemetry.sample_ratio),
    };
    if let Some(endpoint) = endpoint {
        tracing::info!(endpoint = %endpoint, "exporting spans over OTLP/HTTP");
    }
    install_panic_hook();
    Ok(Telemetry {
        policy,
        provider,
        _log_writer: log_writer,
    })
}

fn provider(
    endpoint: &str,
    service_name: &str,
    sample_ratio: Option<f64>,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .context("building the OTLP span exporter")?;
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attributes([
            KeyValue::new("service.version", crate::VERSION),
            KeyValue::new("service.instance.id", instance),
        ])
        .build();
    let builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    // With the key, the service samples before a span exists (`sample_new_trace`, and the
    // caller's flag), so the SDK exports whatever it is given. Without it, the SDK's default
    // applies to the spans it gets: `OTEL_TRACES_SAMPLER`/`_ARG`, else ParentBased(AlwaysOn).
    let builder = match sample_ratio {
        Some(_) => builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
        None => builder,
    };
    Ok(builder.build())
}

/// Panics become one structured error event instead of free text on stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %message, location = %location, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_ratio_becomes_a_threshold_on_the_draw() {
        let all = TracePolicy::default();
        assert!(all.sample_new_trace(u64::MAX) && !all.exporting() && !all.logs_use_spans());
        let none = TracePolicy {
            sample_threshold: TracePolicy::threshold(Some(0.0)),
            ..all
        };
        assert!(!none.sample_new_trace(0));
        let tenth = TracePolicy {
            sample_threshold: TracePolicy::threshold(Some(0.1)),
            ..all
        };
        assert!(tenth.sample_new_trace(u64::MAX / 20));
        assert!(!tenth.sample_new_trace(u64::MAX / 5));
        assert_eq!(TracePolicy::threshold(Some(1.0)), u64::MAX);
        assert_eq!(TracePolicy::threshold(None), u64::MAX);
    }

    #[test]
    fn error_chains_are_one_line() {
        let e = anyhow::anyhow!("root cause")
            .context("middle")
            .context("top");
        let chain = error_chain(e.as_ref());
        assert_eq!(chain, "top: middle: root cause");
    }
}
