//! Abuse limits shared by all sessions: connections per client address
//! that have not logged in (`prelogin.rs`), sessions per user, and the
//! failed-login penalty.
//!
//! The penalty is modelled on Dovecot's: a login waits before its
//! credentials are checked, the longer the more recent failures its client
//! network and its user have (1 s, 2 s, 4 s ... up to the maximum). Waits
//! of one key are queued one penalty apart, so parallel guesses from many
//! addresses run no faster than one guesser; a user with too many attempts
//! queued is refused at once. An address the user logged in from recently
//! skips the user's queue, so a guesser elsewhere cannot slow them down.
//!
//! Bookkeeping is bounded in bytes: keys are keyed digests (`keys.rs`) of the
//! network or the canonical user name (never the name itself), the tables
//! hold at most a configured number of entries, and expired ones are swept
//! on a timer.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub(crate) use super::keys::{Key, Keys};

/// Counts holders per key; a holder is a [`Slot`].
pub(crate) struct Counter<K: Hash + Eq + Clone> {
    counts: DashMap<K, usize>,
    /// Changed by a config reload; slots already held stay.
    max: AtomicUsize,
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
            max: AtomicUsize::new(max),
        })
    }

    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Takes a slot for `key`, or `None` if it holds `max` already.
    pub(crate) fn acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut n = self.counts.entry(key.clone()).or_insert(0);
        let max = self.max.load(Ordering::Relaxed);
        if max > 0 && *n >= max {
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
    /// When the next attempt may be checked.
    next: Instant,
}

/// Recent login failures per key, and the waits they earn.
pub(crate) struct Penalty {
    failures: DashMap<Key, Failures>,
    max_delay: Duration,
    /// Failures older than this are forgotten.
    window: Duration,
    capacity: usize,
    /// Attempts one key may have waiting, at most.
    queue: u32,
}

/// The wait is longer than the queue allows: refuse without checking.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Crowded;

impl Penalty {
    pub(crate) fn new(max_delay: Duration, capacity: usize, queue: u32) -> Self {
        Penalty {
            failures: DashMap::new(),
            max_delay,
            window: Duration::from_secs(300).max(max_delay * 4),
            capacity,
            queue: queue.max(1),
        }
    }

    fn step(&self, count: u32) -> Duration {
        if count == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs(1u64 << (count - 1).min(16)).min(self.max_delay)
    }

    fn expired(&self, f: &Failures, now: Instant) -> bool {
        now > f.next && now.duration_since(f.last) > self.window
    }

    /// Queues an attempt for `key`: how long it must wait before its
    /// credentials are checked.
    pub(crate) fn reserve(&self, key: Key, now: Instant) -> Result<Duration, Crowded> {
        let Some(mut f) = self.failures.get_mut(&key) else {
            return Ok(Duration::ZERO);
        };
        if self.expired(&f, now) {
            return Ok(Duration::ZERO);
        }
        let step = self.step(f.count);
        let start = f.next.max(now);
        let wait = start - now;
        if wait > step * self.queue {
            return Err(Crowded);
        }
        f.next = start + step;
        Ok(wait)
    }

    /// How long an attempt for `key` would wait now.
    #[cfg(test)]
    pub(crate) fn pending(&self, key: Key, now: Instant) -> Duration {
        self.failures
            .get(&key)
            .map_or(Duration::ZERO, |f| f.next.saturating_duration_since(now))
    }

    pub(crate) fn failed(&self, key: Key, now: Instant) {
        if self.max_delay.is_zero() {
            return;
        }
        if self.failures.len() >= self.capacity && !self.failures.contains_key(&key) {
            self.prune(now);
        }
        let mut f = self.failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            next: now,
        });
        if self.expired(&f, now) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.next = f.next.max(now + self.step(f.count));
    }

    pub(crate) fn succeeded(&self, key: Key) {
        self.failures.remove(&key);
    }

    /// Drops expired entries.
    pub(crate) fn sweep(&self, now: Instant) {
        self.failures.retain(|_, f| !self.expired(f, now));
    }

    /// Drops expired entries; if the table is still full, the oldest half.
    fn prune(&self, now: Instant) {
        self.sweep(now);
        if self.failures.len() >= self.capacity {
            let mut ages: Vec<Instant> = self.failures.iter().map(|e| e.last).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            self.failures.retain(|_, f| f.last > cutoff);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.failures.len()
    }
}

/// How long a successful login vouches for its address.
pub(crate) const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);

/// Networks users logged in from recently, by [`Keys::known`].
struct Known {
    since: DashMap<Key, Instant>,
    capacity: usize,
}

impl Known {
    fn sweep(&self, now: Instant) {
        self.since
            .retain(|_, t| now.duration_since(*t) <= KNOWN_FOR);
    }

    fn insert(&self, key: Key, now: Instant) {
        if self.since.len() >= self.capacity && !self.since.contains_key(&key) {
            self.sweep(now);
            if self.since.len() >= self.capacity {
                let mut ages: Vec<Instant> = self.since.iter().map(|e| *e).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                self.since.retain(|_, t| *t > cutoff);
            }
        }
        self.since.insert(key, now);
    }

    fn contains(&self, key: Key, now: Instant) -> bool {
        self.since
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) <= KNOWN_FOR)
    }
}

/// Which part of the penalty made a login wait longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Network,
    User,
}

/// A login attempt let on towards its check.
pub(crate) struct Admission {
    pub(crate) wait: Duration,
    pub(crate) held: Held,
    /// Counts the attempt against its user until dropped.
    pub(crate) in_flight: Option<Slot<Key>>,
}

/// All limits of one server instance.
pub(crate) struct Limiters {
    /// Connections per address that have not logged in yet.
    pub(crate) pre_login: Arc<super::prelogin::PreLogin>,
    pub(crate) per_user: Arc<Counter<Key>>,
    pub(crate) keys: Keys,
    pub(crate) network_penalty: Penalty,
    pub(crate) user_penalty: Penalty,
    /// Attempts per user waiting or being checked, so that even a user
    /// without failures meets no unbounded burst of parallel guesses.
    in_flight: Arc<Counter<Key>>,
    known: Known,
}

impl Limiters {
    /// `exclusive`: RFC 1939's maildrop lock, one session per user.
    pub(crate) fn new(config: &crate::config::Limits, exclusive: bool) -> Limiters {
        let (max, memory) = (config.auth_penalty_max, config.auth_penalty_memory);
        let queue = config.auth_attempts_queued_per_user;
        Limiters {
            pre_login: super::prelogin::PreLogin::new(config.connections_per_ip),
            per_user: Counter::new(if exclusive {
                1
            } else {
                config.sessions_per_user
            }),
            keys: Keys::new(config.auth_penalty_ipv6_prefix),
            // An address's own queue is as long as a user's: one address
            // gains nothing from connecting many times.
            network_penalty: Penalty::new(max, memory, queue),
            user_penalty: Penalty::new(max, memory, queue),
            in_flight: Counter::new(if max.is_zero() { 0 } else { queue as usize }),
            known: Known {
                since: DashMap::new(),
                capacity: memory,
            },
        }
    }

    /// A reloaded config's connection and session limits, for the slots
    /// taken from now on. The penalty's settings need a restart.
    pub(crate) fn retune(&self, config: &crate::config::Limits, exclusive: bool) {
        self.pre_login.set_max(config.connections_per_ip);
        self.per_user.set_max(if exclusive {
            1
        } else {
            config.sessions_per_user
        });
    }

    /// Queues a login attempt: the wait before its credentials may be
    /// checked, which key asked for it, and the in-flight slot to hold
    /// until the check is done (none from a known address).
    pub(crate) fn admit(
        &self,
        network: Key,
        user: Key,
        now: Instant,
    ) -> Result<Admission, Crowded> {
        let known = self.known.contains(self.keys.known(user, network), now);
        let in_flight = if known {
            None
        } else {
            Some(self.in_flight.acquire(user).ok_or(Crowded)?)
        };
        let by_network = self.network_penalty.reserve(network, now)?;
        let by_user = if known {
            Duration::ZERO
        } else {
            self.user_penalty.reserve(user, now)?
        };
        let (wait, held) = if by_network >= by_user {
            (by_network, Held::Network)
        } else {
            (by_user, Held::User)
        };
        Ok(Admission {
            wait,
            held,
            in_flight,
        })
    }

    /// Counts an attempt in flight for `user` (what `admit` does for an
    /// attempt from an unknown address), for a penalty kept elsewhere.
    pub(crate) fn in_flight(&self, user: Key) -> Result<Slot<Key>, Crowded> {
        self.in_flight.acquire(user).ok_or(Crowded)
    }

    /// The penalty's window: failures older than this are forgotten.
    pub(crate) fn window(&self) -> Duration {
        self.user_penalty.window
    }

    pub(crate) fn failed(&self, network: Key, user: Key, now: Instant) {
        self.network_penalty.failed(network, now);
        self.user_penalty.failed(user, now);
    }

    /// The network is cleared and vouched for; the user's failures stay,
    /// so a guesser's penalty outlives the user's own login.
    pub(crate) fn succeeded(&self, network: Key, user: Key, now: Instant) {
        self.network_penalty.succeeded(network);
        if !self.network_penalty.max_delay.is_zero() {
            self.known.insert(self.keys.known(user, network), now);
        }
    }

    /// Forgets what has expired; run on a timer.
    pub(crate) fn sweep(&self, now: Instant) {
        self.network_penalty.sweep(now);
        self.user_penalty.sweep(now);
        self.known.sweep(now);
    }

    /// Entries held in the penalty tables, for the gauge.
    pub(crate) fn remembered(&self) -> usize {
        self.network_penalty.len() + self.user_penalty.len() + self.known.since.len()
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
