//! Who sees which span and event: the OpenTelemetry layer's filter, and the gate that keeps
//! spans nobody reads from being created at all.

use std::cell::Cell;

use tracing::{Metadata, Subscriber, subscriber::Interest};
use tracing_subscriber::{
    filter::{DynFilterFn, LevelFilter},
    layer::{Context, Layer},
    registry::LookupSpan,
};

use super::context;

thread_local! {
    static EXPORT_NEXT_REQUEST: Cell<bool> = const { Cell::new(false) };
}

/// Whether the request span about to be created on this thread is exported. One of the two
/// globals of the request path (with [`context`]'s task-local), because it pays for itself: a
/// per-layer filter decides from a span's static metadata only, so the sampling decision, made
/// just before the span is created, reaches it through this thread-local, set only around span
/// creation by [`super::request_span`]. Keeping unsampled spans from the exporter this way took
/// a request with the exporter installed and nothing sampled from +41.1% to +5.4% instructions
/// over no telemetry (docs/observability.md#overhead).
pub(super) struct ExportNextRequest;

impl ExportNextRequest {
    pub(super) fn set(exported: bool) {
        EXPORT_NEXT_REQUEST.set(exported);
    }

    fn get() -> bool {
        EXPORT_NEXT_REQUEST.get()
    }
}

/// Our own spans and events; nothing from dependencies is exported.
fn ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("shipshape")
}

/// Whether the exporter wants this span or event: the request span if it was sampled, and
/// inside an exported request its database spans and its warnings and errors.
fn exported(meta: &Metadata<'_>) -> bool {
    if meta.is_span() && meta.name() == "request" {
        return ExportNextRequest::get();
    }
    if meta.is_event() && *meta.level() > tracing::Level::WARN {
        return false;
    }
    context::exported()
}

/// What the OpenTelemetry layer sees (see [`exported`]). A span the layer does not see cannot
/// become an orphan root of its own.
pub(super) fn export_filter<S>() -> DynFilterFn<
    S,
    impl Fn(&Metadata<'_>, &Context<'_, S>) -> bool,
    impl Fn(&'static Metadata<'static>) -> Interest,
>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    DynFilterFn::new(|meta: &Metadata<'_>, _: &Context<'_, S>| exported(meta))
        .with_callsite_filter(|meta| {
            if ours(meta) && *meta.level() <= tracing::Level::INFO {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        })
        // Nothing below INFO is exported: without the hint the global maximum level would be
        // TRACE and every `debug!`/`trace!` in every dependency would cost a callsite check.
        .with_max_level_hint(LevelFilter::INFO)
}

/// A global filter under the per-layer ones (add it to the registry first) that drops our
/// spans when no layer reads them: the JSON log layer never does, so they exist only for the exporter (or for the human
/// format). It is needed because tracing-subscriber still creates a span that every per-layer
/// filter rejected at run time (it only skips the layers), so each database span of every
/// unexported request was built, entered and closed for nobody (docs/observability.md#overhead).
pub(super) struct SpanGate {
    /// The human log format shows spans: let everything through.
    pub log_spans: bool,
}

impl<S: Subscriber> Layer<S> for SpanGate {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if !self.log_spans && meta.is_span() && ours(meta) {
            Interest::sometimes()
        } else {
            // Not ours to decide: the per-layer filters' interest stands. (This is why the gate
            // sits under them: a global layer over per-layer filters turns their `never` into
            // `sometimes`, and every callsite they reject would be asked again at each call.)
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.log_spans || !meta.is_span() || !ours(meta) || exported(meta)
    }

    /// The gate enables nothing by itself: the maximum level is the layers' (without this,
    /// "no hint" would lift it to TRACE).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::OFF)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

    use super::*;
    use crate::telemetry::context::RequestContext;

    /// Counts the spans it is told about.
    #[derive(Clone, Default)]
    struct Spans(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Spans {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request(exported: bool) -> RequestContext {
        RequestContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            method: "GET",
            route: "/v1/items/{id}".into(),
            exported,
        }
    }

    /// The database spans of the stores, as they are declared there.
    fn db_span() -> tracing::Span {
        tracing::info_span!(target: "shipshape::items::store::sqlite", "SELECT items", otel.kind = "client")
    }

    #[tokio::test]
    async fn database_spans_exist_only_inside_exported_requests() {
        let (logged, seen) = (Spans::default(), Spans::default());
        let subscriber = tracing_subscriber::registry()
            .with(SpanGate { log_spans: false })
            .with(logged.clone().with_filter(EnvFilter::new("info")))
            .with(seen.clone().with_filter(export_filter()));
        // The gate does not lift the maximum level to TRACE.
        assert_eq!(subscriber.max_level_hint(), Some(LevelFilter::INFO));
        let _guard = tracing::subscriber::set_default(subscriber);
        // Without the gate tracing-subscriber creates this span although the exporter's filter
        // rejects it and the log layer ignores spans.
        assert!(db_span().is_disabled(), "outside a request");
        let unexported = request(false)
            .scope(async { db_span().is_disabled() })
            .await;
        assert!(unexported, "inside an unexported request");
        let exported = request(true).scope(async { db_span().is_disabled() }).await;
        assert!(!exported, "inside an exported request");
        assert_eq!(seen.0.load(Ordering::Relaxed), 1, "the exporter saw it");
        let request_span = super::super::request_span(
            true,
            || tracing::info_span!(target: "shipshape::http", "request"),
        );
        assert!(!request_span.is_disabled(), "a sampled request span");
        let unsampled = super::super::request_span(
            false,
            || tracing::info_span!(target: "shipshape::http", "request"),
        );
        assert!(unsampled.is_disabled(), "an unsampled request span");
        // Events are not the gate's business, and it does not lift the maximum level.
        assert!(tracing::enabled!(target: "shipshape::x", tracing::Level::INFO));
    }

    #[test]
    fn the_human_format_keeps_every_span() {
        let logged = Spans::default();
        let subscriber = tracing_subscriber::registry()
            .with(SpanGate { log_spans: true })
            .with(logged.clone().with_filter(EnvFilter::new("info")));
        tracing::subscriber::with_default(subscriber, || {
            assert!(!db_span().is_disabled());
        });
        assert_eq!(logged.0.load(Ordering::Relaxed), 1);
    }
}
