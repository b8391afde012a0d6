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
    server::conn::auto::Builder,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, TryAcquireError, futures::OwnedNotified, mpsc, watch},
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Pending connections the kernel queues for `accept` (capped by `net.core.somaxconn`).
/// `TcpListener::bind` asks for 128, which a burst of new connections (a load balancer failing
/// over, clients reconnecting after a restart, `http.max_connections` reached) overflows: the
/// kernel then drops SYNs and those clients wait out 1 s, 3 s, 7 s... retransmissions.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket like `TcpListener::bind`, with a deeper accept backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and mio do on Unix: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How a server loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with connections still open.
    GraceExpired,
}

/// Serves `app` on `listener` until `stop` resolves, then drains within `cfg.shutdown_grace`.
///
/// Shutdown keeps the promise that no accepted connection is dropped, as far as the kernel
/// allows: the connections already waiting in the listen backlog (the handshake done, the
/// request maybe sent) are accepted and served before the listener closes, since closing it
/// would reset them; and a connection gets its first request served (answered with
/// `Connection: close`) before it is told to shut down, since hyper would otherwise close a
/// connection that has not been read from yet. Only connections that arrive after the last
/// accept are refused, which clients see as a refused connection before sending anything.
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
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let conns = Connections {
        builder,
        app,
        idle_timeout: cfg.idle_timeout,
        first_request_wait: cfg.header_read_timeout,
        pressure: Arc::new(Pressure::default()),
        stopping: watch::channel(false).0,
        open,
    };
    // At most `max_connections` open connections: beyond that, new ones wait in the kernel's
    // listen backlog until a slot frees up (idle and slow clients are timed out below). When
    // every slot is taken, idle connections are closed early (`Pressure`), so that a flood of
    // idle connections cannot lock out new clients until `idle_timeout`.
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let relief = (cfg.max_connections / 10).max(1);
    tokio::pin!(stop);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break, // the semaphore is never closed
            Err(TryAcquireError::NoPermits) => {
                conns.pressure.begin();
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
            conns.pressure.end();
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
        conns.spawn(stream, peer, Some(slot));
    }
    // From here on every connection serves at most one more request, then closes.
    conns.stopping.send_replace(true);
    let backlog = drain_backlog(listener, &conns).await;
    if backlog > 0 {
        tracing::info!(
            connections = backlog,
            "shutdown: served the connections waiting in the listen backlog"
        );
    }
    // Every connection task holds a sender: `recv` returns `None` once the last one has ended.
    drop(conns);
    tokio::select! {
        _ = all_closed.recv() => Drained::Clean,
        () = tokio::time::sleep(cfg.shutdown_grace) => Drained::GraceExpired,
    }
}

/// Accepts what waits in the listen backlog (non-blocking `accept` until `WouldBlock`, so the
/// kernel's queue is read directly, not tokio's readiness cache), then closes the listener.
/// Returns how many connections were taken over.
///
/// First the listener stops taking new connections ([`refuse_new_handshakes`]); handshakes
/// already under way still complete, so the backlog is read again until
/// [`HANDSHAKE_SETTLE`] has passed. Otherwise a connection completed between the last
/// `accept` and the close (a window a busy machine stretches by descheduling this thread)
/// would be reset with its request unanswered.
async fn drain_backlog(listener: TcpListener, conns: &Connections) -> usize {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "shutdown: cannot drain the listen backlog");
            return 0;
        }
    };
    refuse_new_handshakes(&listener);
    let settled = tokio::time::Instant::now() + HANDSHAKE_SETTLE;
    // Bounded: the backlog holds at most LISTEN_BACKLOG connections, and clients that keep
    // connecting must not hold shutdown up forever.
    let limit = 2 * LISTEN_BACKLOG as usize;
    let mut taken = 0;
    loop {
        taken += accept_queued(&listener, conns, limit - taken);
        if taken >= limit || tokio::time::Instant::now() >= settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(listener);
    taken
}

/// How long the backlog is still read after new connections are refused: longer than a round
/// trip inside a cluster, so a handshake under way when shutdown began completes and is served.
const HANDSHAKE_SETTLE: Duration = Duration::from_millis(100);

/// Accepts and serves up to `limit` connections waiting in the backlog, until it is empty.
fn accept_queued(listener: &std::net::TcpListener, conns: &Connections, limit: usize) -> usize {
    let mut taken = 0;
    while taken < limit {
        match listener.accept() {
            Ok((stream, peer)) => match stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
            {
                Ok(stream) => {
                    conns.spawn(stream, peer, None);
                    taken += 1;
                }
                Err(e) => tracing::warn!(error = %e, "shutdown: cannot serve a queued connection"),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "shutdown: accept failed while draining the backlog");
                break;
            }
        }
    }
    taken
}

/// Attaches a socket filter to the listening socket that drops every packet opening a
/// connection (SYN without ACK), so the kernel starts no new handshake: the client's SYN goes
/// unanswered and, retried after the close, is refused before the client sent anything.
/// Handshakes under way and the connections already queued are untouched. Linux only;
/// elsewhere new connections race with the close.
fn refuse_new_handshakes(listener: &std::net::TcpListener) {
    #[cfg(target_os = "linux")]
    {
        use socket2::SockFilter;
        // Classic BPF over the TCP header: load the flags byte, keep SYN and ACK, drop the
        // packet (return 0) when only SYN is set, keep it whole otherwise.
        const SYN_ONLY_DROPPED: [SockFilter; 5] = [
            SockFilter::new(0x30, 0, 0, 13),       // ldb [13]
            SockFilter::new(0x54, 0, 0, 0x12),     // and #(SYN | ACK)
            SockFilter::new(0x15, 0, 1, 0x02),     // jeq #SYN, drop, keep
            SockFilter::new(0x06, 0, 0, 0),        // drop: ret #0
            SockFilter::new(0x06, 0, 0, u32::MAX), // keep: ret #-1
        ];
        if let Err(e) = socket2::SockRef::from(listener).attach_filter(&SYN_ONLY_DROPPED) {
            tracing::warn!(error = %e, "shutdown: cannot stop new handshakes before the close");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
}

/// What every connection task shares.
struct Connections {
    builder: Builder<TokioExecutor>,
    app: Router,
    idle_timeout: Duration,
    /// After shutdown begins, how long a connection that has not started a request yet gets
    /// to send one before it is closed.
    first_request_wait: Duration,
    pressure: Arc<Pressure>,
    /// `true` once the server shuts down.
    stopping: watch::Sender<bool>,
    /// Cloned into every connection task; all clones gone = all connections closed.
    open: mpsc::Sender<()>,
}

impl Connections {
    fn spawn(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let _ = stream.set_nodelay(true);
        let app = self.app.clone();
        let activity = Arc::new(Activity::default());
        let in_service = activity.clone();
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
            self.idle_timeout,
            self.pressure.clone(),
            activity.clone(),
        ));
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let mut stopping = self.stopping.subscribe();
        let first_request_wait = self.first_request_wait;
        let open = self.open.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let mut told = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    () = shutdown_point(&mut stopping, &activity, first_request_wait), if !told => {
                        // HTTP/1: finish the request in progress, answer `Connection: close`;
                        // HTTP/2: GOAWAY after the open streams.
                        conn.as_mut().graceful_shutdown();
                        told = true;
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, client = %peer, "connection ended with an error");
            }
            drop(slot);
            drop(open);
        });
    }
}

/// How long, once the server stops, a connection that has sent nothing yet may take to send
/// its first byte (a client sends its request right after the handshake; an idle connection
/// a client opened ahead of need is closed after this).
const SILENT_CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// When a connection should be told to shut down: once the server stops, as soon as it has
/// started a request; a connection still silent after `SILENT_CONNECTION_WAIT`, or still
/// without a whole request head after `first_request_wait`, is closed. Telling it earlier
/// would make hyper close a connection whose request it has not read yet, which the client
/// sees as a reset.
async fn shutdown_point(
    stopping: &mut watch::Receiver<bool>,
    activity: &Activity,
    first_request_wait: Duration,
) {
    let _ = stopping.wait_for(|s| *s).await;
    let spoke = activity.wait_until(|a| &a.received);
    if tokio::time::timeout(SILENT_CONNECTION_WAIT, spoke)
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(first_request_wait, activity.wait_until(|a| &a.started)).await;
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

/// A connection's requests: how many are in progress, whether one has started yet, and
/// whether the client has sent anything at all.
#[derive(Default)]
struct Activity {
    in_progress: AtomicUsize,
    started: AtomicBool,
    received: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) == 0
    }

    /// Sets `flag` (once), waking `wait_until`.
    fn mark(&self, flag: &AtomicBool) {
        if !flag.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    /// Resolves once `flag(self)` is set.
    async fn wait_until(&self, flag: impl Fn(&Activity) -> &AtomicBool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if flag(self).load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a request in progress on its connection while alive.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_progress.fetch_add(1, Ordering::AcqRel);
        activity.mark(&activity.started);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
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
    requests: Arc<Activity>,
}

impl IdleTimeout {
    fn new(
        inner: TcpStream,
        timeout: Duration,
        pressure: Arc<Pressure>,
        requests: Arc<Activity>,
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
        let idle = self.requests.is_idle();
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
                    this.requests.mark(&this.requests.received);
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
