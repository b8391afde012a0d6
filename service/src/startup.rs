//! Start-up and shutdown: connects storage, binds listeners, runs the servers, and drains in
//! phases on SIGTERM/SIGINT (not ready -> drain delay -> stop accepting -> grace -> close pool).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    http::{
        self, AppState,
        server::{Drained, bind},
    },
    items::store::{self, SharedStore, Storage, now_micros},
    metrics::Metrics,
    telemetry::{TracePolicy, error_chain},
};

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A bound, connected, not yet serving instance.
pub struct Application {
    state: AppState,
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects to the configured database (applying migrations) and binds the listeners;
    /// requests are traced as `trace` says (`Telemetry::policy`).
    pub async fn build(config: Config, trace: TracePolicy) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let storage = store::connect(&config.database, metrics.store()).await?;
        Self::with_storage(config, storage, metrics, trace)
    }

    /// Binds the listeners for already connected storage.
    pub fn with_storage(
        config: Config,
        storage: Storage,
        metrics: Arc<Metrics>,
        trace: TracePolicy,
    ) -> anyhow::Result<Self> {
        let listener = bind(config.http.listen)
            .with_context(|| format!("binding http.listen {}", config.http.listen))?;
        let metrics_listener = match config.http.metrics_listen {
            Some(addr) => {
                Some(bind(addr).with_context(|| format!("binding http.metrics_listen {addr}"))?)
            }
            None => None,
        };
        let state = AppState::new(storage, metrics, &config, trace);
        Ok(Self {
            state,
            config,
            listener,
            metrics_listener,
        })
    }

    /// The API listener's address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.http.listen)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully. `Ok` = clean exit.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            state,
            config,
            listener,
            metrics_listener,
        } = self;
        let http_cfg = config.http.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let api = tokio::spawn({
            let (app, cfg, stop) = (
                http::router(state.clone(), &config),
                http_cfg.clone(),
                stopped(stop_rx.clone()),
            );
            async move { http::server::serve(listener, app, &cfg, stop).await }
        });
        let metrics = metrics_listener.map(|l| {
            let (app, cfg, stop) = (
                http::metrics_router(state.clone(), &config),
                http_cfg.clone(),
                stopped(stop_rx.clone()),
            );
            tokio::spawn(async move { http::server::serve(l, app, &cfg, stop).await })
        });
        let janitor = tokio::spawn(purge_idempotency_keys(state.store.clone()));

        shutdown.await;
        state.start_draining();
        tracing::info!(
            phase = "drain",
            drain_delay_ms = http_cfg.drain_delay.as_millis() as u64,
            "shutdown: readiness is now 503; still serving while load balancers catch up"
        );
        tokio::time::sleep(http_cfg.drain_delay).await;
        tracing::info!(
            phase = "stop-accepting",
            grace_ms = http_cfg.shutdown_grace.as_millis() as u64,
            "shutdown: no new connections; waiting for in-flight requests"
        );
        let _ = stop_tx.send(true);
        let mut clean = api.await.context("API server task failed")? == Drained::Clean;
        if let Some(m) = metrics {
            clean &= m.await.context("metrics server task failed")? == Drained::Clean;
        }
        janitor.abort();
        if clean {
            tracing::info!(phase = "drained", "shutdown: all requests finished");
        } else {
            tracing::warn!(
                phase = "drained",
                "shutdown: grace period expired with requests still open"
            );
        }
        state.store.close().await;
        tracing::info!(phase = "done", "shutdown: database pool closed; exiting");
        if clean {
            Ok(())
        } else {
            anyhow::bail!("shutdown grace period expired")
        }
    }
}

/// Forgets expired idempotency keys every 10 minutes.
async fn purge_idempotency_keys(store: SharedStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let before = now_micros() - IDEMPOTENCY_TTL;
        match store.purge_idempotency_keys(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys removed"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "purging idempotency keys failed")
            }
        }
    }
}

/// Resolves on SIGTERM (Kubernetes, Docker) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let signal = tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    };
    tracing::info!(signal, phase = "signal", "shutdown: signal received");
}
