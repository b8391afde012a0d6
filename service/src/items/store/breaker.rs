//! Fail fast while the database is unreachable, recover by itself when it is back.
//!
//! With PostgreSQL down, every pool acquire keeps retrying the refused connection until
//! `database.acquire_timeout` runs out (sqlx treats "connection refused" as "still starting"),
//! so each request would hang that long (2 s by default) before its 503, and a burst of them
//! would fill `http.max_concurrent_requests`. After a connection-level failure this wrapper
//! answers 503 at once instead, while one background probe keeps trying the database; its first
//! success closes the breaker again, without a restart.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CreateOutcome, Idempotency, ItemStore, ListQuery, StoreError, WriteOutcome};
use crate::{
    items::model::{Item, NewItem},
    telemetry::error_chain,
};

/// Pause between probes while the database stays unreachable (each probe itself waits up to
/// `acquire_timeout`, retrying the connection with sqlx's backoff).
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// An [`ItemStore`] that fails fast with [`StoreError::Unreachable`] while its database is down.
pub struct Breaker<S> {
    inner: Arc<S>,
    state: Arc<State>,
}

struct State {
    open: AtomicBool,
    /// Microseconds since `epoch` of the last successful operation.
    last_ok: AtomicU64,
    epoch: Instant,
}

impl State {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

impl<S: ItemStore> Breaker<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner: Arc::new(inner),
            state: Arc::new(State {
                open: AtomicBool::new(false),
                last_ok: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// True while requests are being failed fast.
    pub fn is_open(&self) -> bool {
        self.state.open.load(Ordering::Acquire)
    }

    /// Runs one store operation unless the breaker is open; trips it on a connection failure.
    async fn guard<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.is_open() {
            return Err(StoreError::Unreachable);
        }
        let started = self.state.now();
        let result = op.await;
        match &result {
            Ok(_) => self
                .state
                .last_ok
                .store(self.state.now(), Ordering::Relaxed),
            Err(e) if self.is_connection_failure(e, started) => self.trip(e),
            Err(_) => {}
        }
        result
    }

    /// Failures that mean "the database cannot be reached", as opposed to a busy pool, a slow
    /// query or a bad request.
    fn is_connection_failure(&self, err: &StoreError, started: u64) -> bool {
        let StoreError::Database(e) = err else {
            return false;
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
            // Timed out waiting for a connection and nothing else succeeded meanwhile: the pool
            // was not busy serving others, it was failing to connect.
            sqlx::Error::PoolTimedOut => self.state.last_ok.load(Ordering::Relaxed) < started,
            // 08xxx connection exceptions; 57P01-03 admin/crash shutdown, cannot connect now.
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        }
    }

    fn trip(&self, cause: &StoreError) {
        if self.state.open.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            error = %error_chain(cause),
            "database unreachable: answering 503 at once until a probe reaches it again"
        );
        let (inner, state) = (self.inner.clone(), self.state.clone());
        tokio::spawn(async move {
            let down = Instant::now();
            loop {
                match inner.ping().await {
                    Ok(()) => {
                        state.last_ok.store(state.now(), Ordering::Relaxed);
                        state.open.store(false, Ordering::Release);
                        tracing::info!(
                            down_ms = down.elapsed().as_millis() as u64,
                            "database reachable again: serving requests"
                        );
                        return;
                    }
                    // Shutting down: nobody needs the answer any more.
                    Err(StoreError::Database(sqlx::Error::PoolClosed)) => return,
                    Err(_) => tokio::time::sleep(PROBE_PAUSE).await,
                }
            }
        });
    }
}

#[async_trait]
impl<S: ItemStore> ItemStore for Breaker<S> {
    async fn create(
        &self,
        item: &Item,
        idempotency: Option<&Idempotency>,
    ) -> Result<CreateOutcome, StoreError> {
        self.guard(self.inner.create(item, idempotency)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        self.guard(self.inner.get(id)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Item>, StoreError> {
        self.guard(self.inner.list(query)).await
    }

    async fn update(
        &self,
        id: Uuid,
        fields: &NewItem,
        expected: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<WriteOutcome<Item>, StoreError> {
        self.guard(self.inner.update(id, fields, expected, now))
            .await
    }

    async fn delete(
        &self,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<WriteOutcome<()>, StoreError> {
        self.guard(self.inner.delete(id, expected)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.guard(self.inner.ping()).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.guard(self.inner.purge_idempotency_keys(before)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A store whose database is "down" while `down` is set: every call fails with an I/O error.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn answer<T>(&self, ok: T) -> Result<T, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused",
                ))))
            } else {
                Ok(ok)
            }
        }
    }

    #[async_trait]
    impl ItemStore for Flaky {
        async fn create(
            &self,
            _: &Item,
            _: Option<&Idempotency>,
        ) -> Result<CreateOutcome, StoreError> {
            self.answer(CreateOutcome::KeyReused)
        }
        async fn get(&self, _: Uuid) -> Result<Option<Item>, StoreError> {
            self.answer(None)
        }
        async fn list(&self, _: &ListQuery) -> Result<Vec<Item>, StoreError> {
            self.answer(Vec::new())
        }
        async fn update(
            &self,
            _: Uuid,
            _: &NewItem,
            _: Option<i64>,
            _: OffsetDateTime,
        ) -> Result<WriteOutcome<Item>, StoreError> {
            self.answer(WriteOutcome::NotFound)
        }
        async fn delete(&self, _: Uuid, _: Option<i64>) -> Result<WriteOutcome<()>, StoreError> {
            self.answer(WriteOutcome::NotFound)
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.answer(())
        }
        async fn close(&self) {}
        async fn purge_idempotency_keys(&self, _: OffsetDateTime) -> Result<u64, StoreError> {
            self.answer(0)
        }
    }

    #[tokio::test]
    async fn fails_fast_while_down_and_recovers_by_itself() {
        let store = Breaker::new(Flaky::default());
        assert!(store.get(Uuid::nil()).await.is_ok());
        store.inner.down.store(true, Ordering::SeqCst);
        // The first failure reaches the database and trips the breaker...
        assert!(matches!(
            store.get(Uuid::nil()).await,
            Err(StoreError::Database(_))
        ));
        assert!(store.is_open());
        // ...later calls fail at once, without touching it (only the probe does).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = store.inner.calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            let err = store.get(Uuid::nil()).await.unwrap_err();
            assert!(matches!(err, StoreError::Unreachable) && err.is_unavailable());
        }
        assert!(
            store.inner.calls.load(Ordering::SeqCst) - before < 5,
            "probes only"
        );
        // Back up: the probe closes the breaker within a probe pause or two.
        store.inner.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(PROBE_PAUSE * 3).await;
        assert!(!store.is_open());
        assert!(store.get(Uuid::nil()).await.is_ok());
    }

    #[tokio::test]
    async fn errors_that_are_not_about_reaching_the_database_do_not_trip_it() {
        let store = Breaker::new(Flaky::default());
        let started = store.state.now();
        store.state.last_ok.store(started + 1, Ordering::Relaxed);
        for err in [
            StoreError::Corrupt("x".into()),
            StoreError::Database(sqlx::Error::RowNotFound),
            // Timed out while other requests were being served: a busy pool, not an outage.
            StoreError::Database(sqlx::Error::PoolTimedOut),
        ] {
            assert!(!store.is_connection_failure(&err, started), "{err:?}");
        }
        assert!(store.is_connection_failure(
            &StoreError::Database(sqlx::Error::PoolTimedOut),
            started + 2
        ));
    }
}
