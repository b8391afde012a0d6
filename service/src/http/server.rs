//! The HTTP server loop: accepts connections with hyper's limits and timeouts, and shuts down
//! gracefully (stop accepting, let open requests finish within a grace period).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, TryAcquireError, futures::OwnedNotified},
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// How a server loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with connections still open.
    GraceExpired,
}

/// Serves `app` on `listener` until `stop` resolves, then drains within `cfg.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    stop: impl Future<Output = ()>,
) -> Drained {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(cfg.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    // At most `max_connections` open connections: beyond that, new ones wait in the kernel's
    // listen backlog until a slot frees up (idle and slow clients are timed out below). When
    // every slot is taken, idle connections are closed early (`Pressure`), so that a flood of
    // idle connections cannot lock out new clients until `idle_timeout`.
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let pressure = Arc::new(Pressure::default());
    let relief = (cfg.max_connections / 10).max(1);
    tokio::pin!(stop);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break, // the semaphore is never closed
            Err(TryAcquireError::NoPermits) => {
                pressure.begin();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut stop => break,
                }
            }
        };
        if slots.available_permits() >= relief {
            pressure.end();
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        let in_service = requests.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let busy = Busy::new(in_service.clone());
            app.clone().oneshot(req).map(move |response| {
                drop(busy);
                response
            })
        });
        let io = TokioIo::new(IdleTimeout::new(
            stream,
            cfg.idle_timeout,
            pressure.clone(),
            requests,
        ));
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, client = %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Drained::Clean,
        () = tokio::time::sleep(cfg.shutdown_grace) => Drained::GraceExpired,
    }
}

/// How long a connection may sit idle (no request in progress, no byte moving) while every
/// connection slot is taken, before it is closed to make room for a new client.
const PRESSURE_IDLE: Duration = Duration::from_secs(1);

/// Whether all `max_connections` slots are taken; idle connections are told when it starts.
#[derive(Default)]
struct Pressure {
    on: AtomicBool,
    started: Arc<Notify>,
}

impl Pressure {
    fn begin(&self) {
        if !self.on.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "all http.max_connections slots taken: closing connections idle for over {}s",
                PRESSURE_IDLE.as_secs()
            );
            self.started.notify_waiters();
        }
    }

    fn end(&self) {
        self.on.store(false, Ordering::Release);
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// Counts a request in progress on its connection while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that fails with `TimedOut` once no byte has moved in either direction for
/// `timeout` (`http.idle_timeout`): idle keep-alive connections and stalled clients are closed
/// even when hyper is not waiting for a request head (which `header_read_timeout` covers).
/// Under `Pressure`, a connection with no request in progress gets only `PRESSURE_IDLE`.
struct IdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    last_activity: Instant,
    pressure: Arc<Pressure>,
    /// Resolves when pressure starts (registered while the connection waits for bytes).
    pressure_started: Pin<Box<OwnedNotified>>,
    /// Requests being served on this connection.
    requests: Arc<AtomicUsize>,
}

impl IdleTimeout {
    fn new(
        inner: TcpStream,
        timeout: Duration,
        pressure: Arc<Pressure>,
        requests: Arc<AtomicUsize>,
    ) -> Self {
        let pressure_started = Box::pin(pressure.started.clone().notified_owned());
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            last_activity: Instant::now(),
            pressure,
            pressure_started,
            requests,
        }
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
        self.deadline
            .as_mut()
            .reset(self.last_activity + self.timeout);
    }

    /// Called when the socket is not ready: true once the connection should be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Stay registered for the start of pressure (`notify_waiters` wakes only those).
        while self.pressure_started.as_mut().poll(cx).is_ready() {
            self.pressure_started = Box::pin(self.pressure.started.clone().notified_owned());
        }
        let now = Instant::now();
        if now >= self.last_activity + self.timeout {
            return true;
        }
        let idle = self.requests.load(Ordering::Acquire) == 0;
        if self.pressure.is_on() && idle {
            let evict_at = self.last_activity + PRESSURE_IDLE;
            if now >= evict_at {
                return true;
            }
            if evict_at < self.deadline.deadline() {
                self.deadline.as_mut().reset(evict_at);
            }
        } else if self.deadline.deadline() < self.last_activity + self.timeout {
            // An earlier pressure deadline no longer applies.
            self.deadline
                .as_mut()
                .reset(self.last_activity + self.timeout);
        }
        // Register the timer; when it fires the socket is polled again and this re-checks.
        let _ = self.deadline.as_mut().poll(cx);
        false
    }

    /// A write's outcome: bytes written count as activity; a pending write past the idle
    /// deadline ends the connection.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection idle for longer than http.idle_timeout",
    )
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
