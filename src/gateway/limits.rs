//! Abuse limits shared by all sessions: concurrent connections per client
//! address and sessions per user, and the failed-login penalty (modelled on
//! Dovecot's auth penalty: the delay doubles with each recent failure).
//!
//! Bookkeeping is bounded: the penalty tables hold at most a configured
//! number of keys, forgetting the oldest failures first.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Counts holders per key; a holder is a [`Slot`].
pub(crate) struct Counter<K: Hash + Eq + Clone> {
    counts: DashMap<K, usize>,
    max: usize,
}

/// Held while a connection or session counts against its key.
pub(crate) struct Slot<K: Hash + Eq + Clone> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// `max` 0 means unlimited.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Counter {
            counts: DashMap::new(),
            max,
        })
    }

    /// Takes a slot for `key`, or `None` if it holds `max` already.
    pub(crate) fn acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut n = self.counts.entry(key.clone()).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Slot {
            counter: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.len()
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        // Remove the entry at zero so the map only holds live keys.
        self.counter.counts.remove_if_mut(&self.key, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Recent login failures per key, and the delay they earn.
pub(crate) struct Penalty<K: Hash + Eq + Clone> {
    failures: DashMap<K, Failures>,
    max_delay: Duration,
    /// Failures older than this are forgotten.
    window: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Penalty<K> {
    pub(crate) fn new(max_delay: Duration, capacity: usize) -> Self {
        Penalty {
            failures: DashMap::new(),
            max_delay,
            window: Duration::from_secs(300).max(max_delay * 4),
            capacity,
        }
    }

    /// How long a login for `key` must wait now: 0 without recent failures,
    /// then 1 s, 2 s, 4 s ... up to the maximum.
    pub(crate) fn delay(&self, key: &K, now: Instant) -> Duration {
        let Some(f) = self.failures.get(key).map(|f| *f) else {
            return Duration::ZERO;
        };
        if now.duration_since(f.last) > self.window || f.count == 0 {
            return Duration::ZERO;
        }
        let secs = 1u64 << (f.count - 1).min(16);
        Duration::from_secs(secs).min(self.max_delay)
    }

    pub(crate) fn failed(&self, key: K, now: Instant) {
        if self.max_delay.is_zero() {
            return;
        }
        if self.failures.len() >= self.capacity && !self.failures.contains_key(&key) {
            self.prune(now);
        }
        let mut f = self.failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) > self.window {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    pub(crate) fn succeeded(&self, key: &K) {
        self.failures.remove(key);
    }

    /// Drops expired entries; if the table is still full, the oldest half.
    fn prune(&self, now: Instant) {
        self.failures
            .retain(|_, f| now.duration_since(f.last) <= self.window);
        if self.failures.len() >= self.capacity {
            let mut ages: Vec<Instant> = self.failures.iter().map(|e| e.last).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.failures.retain(|_, f| f.last > cutoff);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.len()
    }
}

/// All limits of one server instance.
pub(crate) struct Limiters {
    pub(crate) per_ip: Arc<Counter<IpAddr>>,
    pub(crate) per_user: Arc<Counter<String>>,
    pub(crate) ip_penalty: Penalty<IpAddr>,
    pub(crate) user_penalty: Penalty<String>,
}

impl Limiters {
    /// `exclusive`: RFC 1939's maildrop lock, one session per user.
    pub(crate) fn new(config: &crate::config::Limits, exclusive: bool) -> Limiters {
        Limiters {
            per_ip: Counter::new(config.connections_per_ip),
            per_user: Counter::new(if exclusive {
                1
            } else {
                config.sessions_per_user
            }),
            ip_penalty: Penalty::new(config.auth_penalty_max, config.auth_penalty_memory),
            user_penalty: Penalty::new(config.auth_penalty_max, config.auth_penalty_memory),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Counter, Penalty};
    use std::time::{Duration, Instant};

    #[test]
    fn counter_limits_and_forgets() {
        let c = Counter::new(2);
        let a = c.acquire("x").unwrap();
        let b = c.acquire("x").unwrap();
        assert!(c.acquire("x").is_none());
        assert!(c.acquire("y").is_some());
        drop(a);
        let _a = c.acquire("x").unwrap();
        drop((b, _a));
        assert_eq!(c.len(), 0, "released keys leave no entry");
        assert!(Counter::new(0).acquire("z").is_some(), "0 is unlimited");
    }

    #[test]
    fn penalty_doubles_up_to_the_cap_and_resets() {
        let p = Penalty::new(Duration::from_secs(15), 100);
        let t = Instant::now();
        assert_eq!(p.delay(&"u", t), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..6 {
            p.failed("u", t);
            seen.push(p.delay(&"u", t).as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 15, 15]);
        assert_eq!(p.delay(&"u", t + Duration::from_secs(3600)), Duration::ZERO);
        p.succeeded(&"u");
        assert_eq!(p.delay(&"u", t), Duration::ZERO);
    }

    #[test]
    fn penalty_memory_is_bounded() {
        let p = Penalty::new(Duration::from_secs(15), 1000);
        let t = Instant::now();
        for i in 0..10_000u32 {
            p.failed(i, t + Duration::from_millis(u64::from(i)));
        }
        assert!(p.len() <= 1000, "{}", p.len());
        // The most recent offenders are still remembered.
        assert!(p.delay(&9_999, t + Duration::from_secs(10)) > Duration::ZERO);
    }

    #[test]
    fn zero_max_delay_disables() {
        let p = Penalty::new(Duration::ZERO, 10);
        p.failed(1, Instant::now());
        assert_eq!(p.len(), 0);
    }
}
