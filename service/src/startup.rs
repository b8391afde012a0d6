//! Start-up and shutdown: connects storage, binds listeners, runs the servers, and drains in
//! phases on SIGTERM/SIGINT (not ready -> drain delay -> stop accepting -> grace -> close pool).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    db,
    http::{self, AppState, server::Drained},
    items::store::{ItemStore, now_micros},
    metrics::Metrics,
};

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A bound, connected, not yet serving instance.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects to the configured database (applying migrations) and binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = db::connect(&config.database).await?;
        Self::with_store(config, store).await
    }

    /// Binds the listeners for an already connected store.
    pub async fn with_store(config: Config, store: Arc<dyn ItemStore>) -> anyhow::Result<Self> {
        let listener = bind(config.http.listen)
            .with_context(|| format!("binding http.listen {}", config.http.listen))?;
        let metrics_listener = match config.http.metrics_listen {
            Some(addr) => {
                Some(bind(addr).with_context(|| format!("binding http.metrics_listen {addr}"))?)
            }
            None => None,
        };
        let state = AppState::new(
            store.clone(),
            Arc::new(Metrics::new(store.acquire_wait())),
            Arc::new(config),
        );
        Ok(Self {
            state,
            listener,
            metrics_listener,
        })
    }

    /// The API listener's address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.http.listen)
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
            listener,
            metrics_listener,
        } = self;
        let http_cfg = state.config.http.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let api = tokio::spawn({
            let (app, cfg, stop) = (
                http::router(state.clone()),
                http_cfg.clone(),
                stopped(stop_rx.clone()),
            );
            async move { http::server::serve(listener, app, &cfg, stop).await }
        });
        let metrics = metrics_listener.map(|l| {
            let (app, cfg, stop) = (
                http::metrics_router(state.clone()),
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

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
/// `TcpListener::bind` asks for 128, which a burst of new connections (a load balancer failing
/// over, clients reconnecting after a restart, `http.max_connections` reached) overflows: the
/// kernel then drops SYNs and those clients wait out 1 s, 3 s, 7 s... retransmissions.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket like `TcpListener::bind`, with a deeper accept backlog.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and mio do on Unix: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Forgets expired idempotency keys every 10 minutes.
async fn purge_idempotency_keys(store: Arc<dyn ItemStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let before = now_micros() - IDEMPOTENCY_TTL;
        match store.purge_idempotency_keys(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys removed"),
            Err(e) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "purging idempotency keys failed")
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
