//! Logging and tracing set-up: JSON lines (or a human format) filtered with `EnvFilter`, and
//! optional OpenTelemetry span export over OTLP/HTTP.

pub mod context;
mod filter;
mod json;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// Whether spans are exported (the request path then takes trace ids from OpenTelemetry).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when an OpenTelemetry exporter is installed.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether the log format shows request spans (the human one does; JSON lines take the request
/// fields from [`context`]).
static LOG_SPANS: AtomicBool = AtomicBool::new(false);

/// True when every request needs a tracing span for its log lines, exported or not.
pub fn logs_use_spans() -> bool {
    LOG_SPANS.load(Ordering::Relaxed)
}

/// Share of new traces to export, as the `u64` threshold a random draw must stay under
/// (`u64::MAX` = all). Set once by [`init`] from `telemetry.sample_ratio`.
static SAMPLE_THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

/// Head sampling for a trace this service starts: `draw` is random (the trace id's low half).
pub fn sample_new_trace(draw: u64) -> bool {
    let threshold = SAMPLE_THRESHOLD.load(Ordering::Relaxed);
    threshold == u64::MAX || draw < threshold
}

/// Creates the request span with `make`, visible to the span exporter only if `sampled`.
/// Unsampled requests (and their database spans) then never reach the OpenTelemetry layer,
/// so they cost what they cost without export (docs/observability.md#overhead).
pub fn request_span(sampled: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    filter::EXPORT_NEXT_REQUEST.set(sampled);
    let span = make();
    filter::EXPORT_NEXT_REQUEST.set(false);
    span
}

/// Keeps the log writer and the exporter alive; `shutdown` flushes both.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    _log_writer: writer::FlushGuard,
}

impl Telemetry {
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
    let filter = EnvFilter::try_new(&log.level)?;
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
    LOG_SPANS.store(log_spans, Ordering::Relaxed);
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
    if let Some(ratio) = telemetry.sample_ratio {
        // 2^64 * ratio, saturating: 1.0 means every trace.
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 18_446_744_073_709_551_616.0) as u64
        };
        SAMPLE_THRESHOLD.store(threshold, Ordering::Relaxed);
    }
    if let Some(endpoint) = endpoint {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = %endpoint, "exporting spans over OTLP/HTTP");
    }
    install_panic_hook();
    Ok(Telemetry {
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
