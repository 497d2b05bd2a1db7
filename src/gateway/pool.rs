//! Upstream connections opened ahead of logins (`upstream.pool`): connected,
//! through TLS and greeted, with their capabilities read, so that a login
//! starts at its ID and LOGIN. Most of a POP3 login's time against Dovecot
//! is its IMAP greeting (a new imap-login client) and its LOGIN; the pool
//! takes the first off the session's path.
//!
//! A pooled connection has not logged in, and serves one login only: it is
//! never handed to a second user. One older than `pool_max_age`, or one the
//! server has spoken on meanwhile (a goodbye, a close), is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::debug;

use super::backend::{Backend, Imap, OpenGuard};

pub(crate) struct Pool {
    ready: Mutex<VecDeque<Ready>>,
    /// `popgate_upstream_connections_pooled` and `..._open` of the route:
    /// a connection moves from the first to the second when taken.
    pooled: prometheus::IntGauge,
    open: prometheus::IntGauge,
    size: usize,
    max_age: Duration,
    /// Woken when a login asked for a connection, to open replacements.
    taken: Notify,
}

struct Ready {
    opened: Instant,
    imap: Imap,
    guard: OpenGuard,
}

/// After a failed open, the filler waits this long before trying again,
/// so an unreachable server is not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Pool {
    pub(crate) fn new(
        size: usize,
        max_age: Duration,
        pooled: prometheus::IntGauge,
        open: prometheus::IntGauge,
    ) -> Pool {
        Pool {
            ready: Mutex::new(VecDeque::with_capacity(size)),
            pooled,
            open,
            size,
            max_age,
            taken: Notify::new(),
        }
    }

    /// A fresh pooled connection, if there is one.
    pub(crate) fn take(&self) -> Option<(Imap, OpenGuard)> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        while let Some(r) = ready.pop_front() {
            if r.opened.elapsed() < self.max_age && !r.imap.stream().peer_spoke() {
                let mut guard = r.guard;
                guard.count_on(self.open.clone());
                found = Some((r.imap, guard));
                break;
            }
        }
        drop(ready);
        self.taken.notify_one();
        found
    }

    fn len(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Drops connections too old to hand out.
    fn prune(&self) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.retain(|r| r.opened.elapsed() < self.max_age);
    }
}

/// Refills the backend's pool after each login that took from it, for as
/// long as the gateway runs. Connections are opened on demand only: a pool
/// that no login draws from empties as its connections age, so an idle
/// gateway holds nothing open on the server (each pooled connection is a
/// pre-login client there, logged when it goes).
pub async fn fill(backend: Arc<Backend>) {
    let Some(pool) = backend.pool.as_ref() else {
        return;
    };
    loop {
        if tokio::time::timeout(pool.max_age / 2, pool.taken.notified())
            .await
            .is_err()
        {
            pool.prune();
            continue;
        }
        while pool.len() < pool.size {
            match backend.open().await {
                Ok((imap, mut guard)) => {
                    guard.count_on(pool.pooled.clone());
                    let mut ready = pool.ready.lock().unwrap_or_else(|p| p.into_inner());
                    ready.push_back(Ready {
                        opened: Instant::now(),
                        imap,
                        guard,
                    });
                }
                Err(e) => {
                    debug!(route = %backend.name, error = %e, "could not open a pooled upstream connection");
                    tokio::time::sleep(RETRY_AFTER).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::Config;
    use crate::gateway::backend::tests::greeting_only;
    use crate::gateway::backend::Backend;
    use crate::metrics::Metrics;
    use crate::test_support::until;

    /// A backend whose server greets and then holds the connection until
    /// the client drops it; `opened` counts the connections.
    fn backend(
        pool: usize,
        max_age: &str,
        opened: Arc<AtomicUsize>,
        metrics: Arc<Metrics>,
    ) -> Arc<Backend> {
        let config = Config::for_tests(&format!("  pool: {pool}\n  pool_max_age: {max_age}\n"), "");
        let connector = greeting_only("* OK [CAPABILITY IMAP4rev1] ready", opened);
        Backend::with_connector("default", "upstream", &config.upstream, metrics, connector)
            .unwrap()
    }

    #[tokio::test]
    async fn logins_take_fresh_connections_and_the_pool_refills_on_demand() {
        let opened = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new());
        let b = backend(2, "60s", opened.clone(), metrics.clone());
        let pool = b.pool.as_ref().unwrap();
        let filler = tokio::spawn(super::fill(b.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            opened.load(SeqCst),
            0,
            "nothing is opened before a login asks"
        );
        assert!(pool.take().is_none());
        until("filled", || pool.len() == 2).await;
        let pooled = metrics.upstream_pooled.with_label_values(&["default"]);
        assert_eq!(pooled.get(), 2);
        pool.prune();
        assert_eq!(pool.len(), 2, "a prune keeps fresh connections");

        let (imap, guard) = pool.take().expect("a fresh connection");
        assert!(imap.has_capability("IMAP4rev1"));
        let open = metrics.upstream_open.with_label_values(&["default"]);
        assert_eq!(
            (pooled.get(), open.get()),
            (1, 1),
            "it moved to the open count"
        );
        until("refilled", || pool.len() == 2).await;
        assert_eq!(opened.load(SeqCst), 3);
        drop((imap, guard));
        assert_eq!(open.get(), 0);
        filler.abort();
    }

    #[tokio::test]
    async fn a_retried_login_asks_for_a_new_connection_and_gets_one() {
        let opened = Arc::new(AtomicUsize::new(0));
        let b = backend(1, "60s", opened.clone(), Arc::new(Metrics::new()));
        let pool = b.pool.as_ref().unwrap();
        let filler = tokio::spawn(super::fill(b.clone()));
        assert!(pool.take().is_none());
        until("filled", || pool.len() == 1).await;
        let ends = crate::gateway::backend::Endpoints {
            client: "192.0.2.1:40000".parse().unwrap(),
            local: "127.0.0.1:110".parse().unwrap(),
        };
        let (_imap, _guard, pooled) = b.connect_with(Some(ends), false).await.unwrap();
        assert!(!pooled);
        assert_eq!(
            (pool.len(), opened.load(SeqCst)),
            (1, 2),
            "the pool is untouched"
        );
        let (_imap, _guard, pooled) = b.connect_with(Some(ends), true).await.unwrap();
        assert!(pooled, "a first try takes from the pool");
        filler.abort();
    }

    #[tokio::test]
    async fn a_connection_older_than_max_age_is_never_handed_out() {
        let opened = Arc::new(AtomicUsize::new(0));
        let b = backend(1, "300ms", opened.clone(), Arc::new(Metrics::new()));
        let pool = b.pool.as_ref().unwrap();
        let filler = tokio::spawn(super::fill(b.clone()));
        assert!(pool.take().is_none());
        until("filled", || pool.len() == 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(pool.take().is_none(), "too old");
        until("pruned and refilled", || {
            opened.load(SeqCst) == 2 && pool.len() == 1
        })
        .await;
        filler.abort();
    }

    #[tokio::test]
    async fn a_pool_no_login_draws_from_empties_as_it_ages() {
        let metrics = Arc::new(Metrics::new());
        let b = backend(1, "100ms", Arc::default(), metrics.clone());
        let pool = b.pool.as_ref().unwrap();
        let filler = tokio::spawn(super::fill(b.clone()));
        assert!(pool.take().is_none());
        until("filled", || pool.len() == 1).await;
        let pooled = metrics.upstream_pooled.with_label_values(&["default"]);
        until("pruned", || pool.len() == 0 && pooled.get() == 0).await;
        filler.abort();
    }

    #[tokio::test]
    async fn a_connection_that_aged_unpruned_is_passed_over() {
        let b = backend(1, "100ms", Arc::default(), Arc::new(Metrics::new()));
        let pool = b.pool.as_ref().unwrap();
        let filler = tokio::spawn(super::fill(b.clone()));
        assert!(pool.take().is_none());
        until("filled", || pool.len() == 1).await;
        // No filler, so no prune, removes it first.
        filler.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pool.len(), 1);
        assert!(pool.take().is_none(), "too old");
    }
}
