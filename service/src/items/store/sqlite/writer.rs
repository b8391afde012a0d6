//! Group commit: one thread owns the connection that writes, and commits every write that
//! queued while the previous commit was being made durable in one transaction and one fsync.
//!
//! Each write runs in its own savepoint inside the group's transaction, in arrival order, so it
//! sees the writes before it (the same idempotency key twice in one group replays) and a failed
//! write is rolled back alone. Each request is answered after the COMMIT that holds its write
//! has returned, which with `synchronous=FULL` means after the fsync: an acknowledged write
//! survives kill -9 and power loss.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use prometheus_client::metrics::histogram::Histogram;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::super::StoreError;
use crate::metrics::StoreMetrics;

/// How many writes may wait for the writer before new ones wait for room (then 503).
const QUEUE_CAPACITY: usize = 1024;

/// How large a group may grow, and how long the writer waits for more writes once it has one.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupLimits {
    pub max_size: usize,
    pub max_wait: Duration,
}

/// The handle requests submit writes through.
pub(super) struct Writer {
    queue: mpsc::Sender<Msg>,
    /// How long a write waits for room in a full queue before failing with 503.
    admission_timeout: Duration,
    admission_wait: Histogram,
}

enum Msg {
    Write(Box<dyn Job>),
    /// Commit what is queued before this, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// A write waiting in the group: its operation, then its outcome until the commit.
trait Job: Send {
    /// Runs the write on the group's transaction; false if it failed (its savepoint is then
    /// rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the request: its outcome if the group committed, else the commit's error.
    fn answer(self: Box<Self>, commit: Result<(), &rusqlite::Error>);
}

struct Pending<T, F> {
    op: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let outcome =
            catch_unwind(AssertUnwindSafe(|| op(conn))).unwrap_or(Err(StoreError::Panicked));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<(), &rusqlite::Error>) {
        let result = match commit {
            Err(e) => Err(StoreError::Sqlite(replicate(e))),
            Ok(()) => self.outcome.unwrap_or(Err(StoreError::Panicked)),
        };
        // The request may have gone (client disconnected, timeout): its write stands anyway.
        let _ = self.reply.send(result);
    }
}

impl Writer {
    /// Starts the writer thread over `conn` (already migrated).
    pub(super) fn start(
        conn: Connection,
        limits: GroupLimits,
        admission_timeout: Duration,
        metrics: &StoreMetrics,
    ) -> std::io::Result<Writer> {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let group_size = metrics.commit_group_size.clone();
        let commit_duration = metrics.commit_duration.clone();
        // A runtime of its own, only to wait for the queue with a deadline; the SQLite calls
        // block the writer thread, which nothing else runs on.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                rt.block_on(
                    Group {
                        conn,
                        limits,
                        group_size,
                        commit_duration,
                    }
                    .serve(rx),
                );
            })?;
        Ok(Writer {
            queue,
            admission_timeout,
            admission_wait: metrics.acquire_wait.clone(),
        })
    }

    /// Runs `op` in the next group and returns its outcome once the group is durable.
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Write(Box::new(Pending {
            op: Some(op),
            outcome: None,
            reply,
        }));
        match self.queue.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(StoreError::Closed),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let start = Instant::now();
                let sent = self.queue.send_timeout(msg, self.admission_timeout).await;
                self.admission_wait.observe(start.elapsed().as_secs_f64());
                match sent {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => return Err(StoreError::Busy),
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                        return Err(StoreError::Closed);
                    }
                }
            }
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// False once the writer thread has stopped (closed, or gone after a panic).
    pub(super) fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Commits what is queued, closes the connection and stops the thread.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Msg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The writer thread's state.
struct Group {
    conn: Connection,
    limits: GroupLimits,
    group_size: Histogram,
    commit_duration: Histogram,
}

impl Group {
    async fn serve(self, mut rx: mpsc::Receiver<Msg>) {
        let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(self.limits.max_size);
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.recv().await else { break };
            take(first, &mut jobs, &mut closing);
            // Everything already queued joins, up to the bound...
            while jobs.len() < self.limits.max_size && closing.is_none() {
                match rx.try_recv() {
                    Ok(msg) => take(msg, &mut jobs, &mut closing),
                    Err(_) => break,
                }
            }
            // ...and, if configured, what arrives within max_wait.
            if !self.limits.max_wait.is_zero() {
                let deadline = tokio::time::Instant::now() + self.limits.max_wait;
                while jobs.len() < self.limits.max_size && closing.is_none() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(msg)) => take(msg, &mut jobs, &mut closing),
                        _ => break,
                    }
                }
            }
            if !jobs.is_empty() {
                self.commit(&mut jobs);
            }
        }
        rx.close();
        // Writes that raced with Close are answered with `Closed` as their senders drop.
        drop(rx);
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the SQLite writer connection");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// One transaction for the whole group; every job in its own savepoint.
    fn commit(&self, jobs: &mut Vec<Box<dyn Job>>) {
        let start = Instant::now();
        let conn = &self.conn;
        let result = (|| {
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            for job in jobs.iter_mut() {
                conn.prepare_cached("SAVEPOINT write")?.execute([])?;
                if !job.run(conn) {
                    conn.prepare_cached("ROLLBACK TO write")?.execute([])?;
                }
                conn.prepare_cached("RELEASE write")?.execute([])?;
            }
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok::<_, rusqlite::Error>(())
        })();
        if result.is_err()
            && !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a failed write group");
        }
        self.commit_duration.observe(start.elapsed().as_secs_f64());
        self.group_size.observe(jobs.len() as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = jobs.len(), "a write group failed to commit");
        }
        for job in jobs.drain(..) {
            job.answer(result.as_ref().map(|_| ()));
        }
    }
}

fn take(msg: Msg, jobs: &mut Vec<Box<dyn Job>>, closing: &mut Option<oneshot::Sender<()>>) {
    match msg {
        Msg::Write(job) => jobs.push(job),
        Msg::Close(done) => *closing = Some(done),
    }
}

/// The same SQLite error again, for each request of a group that failed as one.
fn replicate(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;
    use crate::metrics::Metrics;

    /// A writer over a fresh database with a table `t (n INTEGER CHECK (n > 0))`, gathering
    /// for `wait` so that concurrent test writes land in one group.
    fn writer(wait: Duration) -> (tempfile::TempDir, Arc<Writer>, StoreMetrics) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.busy_timeout(Duration::from_millis(100)).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER CHECK (n > 0));")
            .unwrap();
        let metrics = Metrics::new().store();
        let limits = GroupLimits {
            max_size: 8,
            max_wait: wait,
        };
        let w = Writer::start(conn, limits, Duration::from_secs(1), &metrics).unwrap();
        (dir, Arc::new(w), metrics)
    }

    fn insert(n: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |conn: &Connection| {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(n)
        }
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// `_count` and `_sum` of a histogram, as Prometheus would scrape them.
    fn count_and_sum(h: &Histogram) -> (u64, f64) {
        let mut registry = Registry::default();
        registry.register("h", "h", h.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let value = |suffix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("h_{suffix} ")))
                .unwrap()
                .to_owned()
        };
        (
            value("count").parse().unwrap(),
            value("sum").parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn concurrent_writes_commit_as_one_group_and_each_gets_its_outcome() {
        let (dir, w, metrics) = writer(Duration::from_millis(50));
        let writes: Vec<_> = (1..=6)
            .map(|n| {
                let w = w.clone();
                tokio::spawn(async move { w.write(insert(n)).await })
            })
            .collect();
        for (n, done) in (1..=6).zip(writes) {
            assert_eq!(done.await.unwrap().unwrap(), n);
        }
        assert_eq!(rows(&dir), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(count_and_sum(&metrics.commit_group_size), (1, 6.0));
        assert_eq!(count_and_sum(&metrics.commit_duration).0, 1);
    }

    #[tokio::test]
    async fn a_group_is_no_larger_than_its_bound() {
        let (dir, w, metrics) = writer(Duration::from_millis(50));
        let writes: Vec<_> = (1..=20)
            .map(|n| {
                let w = w.clone();
                tokio::spawn(async move { w.write(insert(n)).await })
            })
            .collect();
        for done in writes {
            done.await.unwrap().unwrap();
        }
        assert_eq!(rows(&dir).len(), 20);
        let (groups, writes) = count_and_sum(&metrics.commit_group_size);
        assert_eq!(writes, 20.0);
        assert!(
            groups >= 3,
            "20 writes in groups of at most 8: {groups} groups"
        );
    }

    #[tokio::test]
    async fn a_failed_or_panicking_write_does_not_fail_its_neighbours() {
        let (dir, w, metrics) = writer(Duration::from_millis(50));
        let (a, bad, boom, b) = tokio::join!(
            w.write(insert(1)),
            // Violates the CHECK: its savepoint is rolled back, the group goes on.
            w.write(|conn: &Connection| {
                conn.execute("INSERT INTO t (n) VALUES (5)", [])?;
                conn.execute("INSERT INTO t (n) VALUES (0)", [])?;
                Ok(0)
            }),
            w.write(|conn: &Connection| -> Result<i64, StoreError> {
                conn.execute("INSERT INTO t (n) VALUES (7)", [])?;
                panic!("a bug in one write")
            }),
            w.write(insert(2)),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
        assert!(matches!(bad, Err(StoreError::Sqlite(_))), "{bad:?}");
        assert!(matches!(boom, Err(StoreError::Panicked)), "{boom:?}");
        // Neither the failed write's first insert nor the panicking one's survived.
        assert_eq!(rows(&dir), vec![1, 2]);
        assert_eq!(count_and_sum(&metrics.commit_group_size), (1, 4.0));
    }

    #[tokio::test]
    async fn a_group_that_cannot_commit_fails_every_write_in_it() {
        let (dir, w, _) = writer(Duration::from_millis(50));
        // Another connection holds the write lock past the writer's busy timeout (100 ms), so
        // BEGIN IMMEDIATE fails for the whole group.
        let other = Connection::open(dir.path().join("w.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (a, b) = tokio::join!(w.write(insert(1)), w.write(insert(2)));
        for r in [a, b] {
            let e = r.unwrap_err();
            assert!(e.is_unavailable(), "busy means retry later: {e:?}");
        }
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(w.write(insert(3)).await.unwrap(), 3);
        assert_eq!(rows(&dir), vec![3]);
    }

    #[tokio::test]
    async fn close_commits_what_is_queued_then_refuses_writes() {
        let (dir, w, _) = writer(Duration::ZERO);
        let queued = {
            let w = w.clone();
            tokio::spawn(async move { w.write(insert(1)).await })
        };
        tokio::task::yield_now().await;
        w.close().await;
        assert_eq!(queued.await.unwrap().unwrap(), 1);
        assert!(!w.is_running());
        assert!(matches!(w.write(insert(2)).await, Err(StoreError::Closed)));
        assert_eq!(rows(&dir), vec![1]);
    }
}
