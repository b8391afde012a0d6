//! Per-client rate limiting (GCRA via `governor`), keyed by token subject or client IP, with
//! bounded memory: idle clients are forgotten, and at most `rate_limit.max_clients` are tracked.

use std::{
    hash::{Hash, Hasher},
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DashMapStateStore,
};

use crate::config::RateLimitConfig;

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated token subject.
    Subject(String),
    /// An anonymous client's address; IPv6 clients by their /64 (one host's usual allocation).
    Ip(IpAddr),
    /// While the table is full, new clients share one of a fixed set of buckets.
    Overflow(u16),
}

impl ClientKey {
    pub fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey::Ip(IpAddr::V6(masked.into()))
            }
            v4 => ClientKey::Ip(v4),
        }
    }
}

/// Buckets shared by clients that arrive while the table is full.
const OVERFLOW_BUCKETS: u64 = 1024;
/// How often idle clients are dropped from the table.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let through; `remaining` more requests would pass right now.
    Allowed { remaining: u32 },
    /// Rejected; the client may retry after this long.
    Limited { retry_after: Duration },
}

type Keyed =
    RateLimiter<ClientKey, DashMapStateStore<ClientKey>, DefaultClock, StateInformationMiddleware>;

/// The shared limiter.
pub struct Limiter {
    inner: Keyed,
    clock: DefaultClock,
    per_second: u32,
    burst: u32,
    max_clients: usize,
    started: Instant,
    last_sweep_ms: AtomicU64,
}

impl Limiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        let per_second = NonZeroU32::new(cfg.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let clock = DefaultClock::default();
        Self {
            inner: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            per_second: per_second.get(),
            burst: burst.get(),
            max_clients: cfg.max_clients,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    /// Counts one request against `key`.
    pub fn check(&self, key: ClientKey) -> Decision {
        self.sweep_if_due(false);
        let key = if self.inner.len() >= self.max_clients {
            self.sweep_if_due(true);
            if self.inner.len() >= self.max_clients {
                overflow(&key)
            } else {
                key
            }
        } else {
            key
        };
        match self.inner.check_key(&key) {
            Ok(snapshot) => Decision::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.inner.len()
    }

    /// Drops clients whose bucket is full again (indistinguishable from new ones), at most
    /// once per `SWEEP_EVERY` (once per second when `urgent`, i.e. the table is full).
    fn sweep_if_due(&self, urgent: bool) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let every = if urgent {
            1000
        } else {
            SWEEP_EVERY.as_millis() as u64
        };
        if now.saturating_sub(last) < every {
            return;
        }
        if self
            .last_sweep_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another request is sweeping
        }
        let before = self.inner.len();
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        let after = self.inner.len();
        if after >= self.max_clients {
            tracing::warn!(
                tracked = after,
                max_clients = self.max_clients,
                "rate limiter is tracking its maximum number of clients; new clients share buckets"
            );
        } else if before != after {
            tracing::debug!(before, after, "rate limiter forgot idle clients");
        }
    }

    /// `RateLimit-Policy` value (IETF draft-ietf-httpapi-ratelimit-headers): the burst as
    /// quota over the time the bucket takes to refill completely.
    pub fn policy_header(&self) -> String {
        format!(
            "\"default\";q={};w={}",
            self.burst,
            self.refill_secs(self.burst)
        )
    }

    /// `RateLimit` value: remaining quota and seconds until the bucket is full again.
    pub fn status_header(&self, remaining: u32) -> String {
        let used = self.burst.saturating_sub(remaining);
        format!("\"default\";r={remaining};t={}", self.refill_secs(used))
    }

    fn refill_secs(&self, cells: u32) -> u32 {
        cells.div_ceil(self.per_second)
    }
}

fn overflow(key: &ClientKey) -> ClientKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    ClientKey::Overflow((h.finish() % OVERFLOW_BUCKETS) as u16)
}

/// Whole seconds to wait, rounded up, at least 1 (for `Retry-After`).
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_second: u32, burst: u32, max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            max_clients,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn burst_then_limited_per_key() {
        let l = Limiter::new(&cfg(1, 3, 100));
        let a = ClientKey::Subject("a".into());
        for left in [2, 1, 0] {
            assert_eq!(l.check(a.clone()), Decision::Allowed { remaining: left });
        }
        match l.check(a.clone()) {
            Decision::Limited { retry_after } => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}")
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            l.check(ClientKey::Subject("b".into())),
            Decision::Allowed { .. }
        ));
        assert_eq!(l.policy_header(), "\"default\";q=3;w=3");
        assert_eq!(l.status_header(0), "\"default\";r=0;t=3");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientKey::ip("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::ip("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = ClientKey::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn table_size_is_bounded() {
        let l = Limiter::new(&cfg(1, 1, 16));
        for i in 0..5000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = l.check(ClientKey::ip(ip));
        }
        assert!(
            l.tracked() <= 16 + OVERFLOW_BUCKETS as usize,
            "tracked {}",
            l.tracked()
        );
    }

    #[test]
    fn a_full_table_forgets_idle_clients_within_a_second() {
        // 1000 per second: every bucket is full again long before the sweep.
        let l = Limiter::new(&cfg(1000, 1, 16));
        for i in 0..16u32 {
            let _ = l.check(ClientKey::ip(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(l.tracked(), 16);
        std::thread::sleep(Duration::from_millis(1100));
        // The table is full: this check sweeps first, and the newcomer gets its own bucket.
        let _ = l.check(ClientKey::Subject("newcomer".into()));
        assert_eq!(l.tracked(), 1, "idle clients forgotten");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
