//! The request this task is serving: what every log line written while serving it names, and
//! whether its spans are exported.
//!
//! A task-local, one of the two globals of the request path (with `filter::ExportNextRequest`),
//! because it pays for itself: log lines and problem bodies anywhere below the HTTP layer name
//! the request without a tracing span per request, which only exported requests and the human
//! log format pay for (JSON logs with trace context cost +5.2% instructions per request:
//! docs/observability.md#overhead).

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The trace ids, method and route of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bounded method label (`GET`, ..., `_OTHER`).
    pub method: &'static str,
    /// Matched route template, or `unmatched`.
    pub route: String,
    /// The request's spans go to the OpenTelemetry exporter.
    pub exported: bool,
}

impl RequestContext {
    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Calls `f` with the current request's context, if this task is serving one.
pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// True inside a request whose spans are exported.
pub fn exported() -> bool {
    with_current(|c| c.exported).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_visible_inside_the_scope_only() {
        let ctx = RequestContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            method: "GET",
            route: "/v1/items/{id}".into(),
            exported: true,
        };
        assert_eq!(with_current(|c| c.method), None);
        assert!(!exported());
        let seen = ctx
            .clone()
            .scope(async {
                tokio::task::yield_now().await;
                (with_current(Clone::clone), exported())
            })
            .await;
        assert_eq!(seen, (Some(ctx), true));
        assert!(!exported());
    }
}
