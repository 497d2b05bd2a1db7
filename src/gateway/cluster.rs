//! What several instances share on Redis so that they act as one gateway:
//! the per-user session lease behind `session.exclusive` and
//! `limits.sessions_per_user`, and the failed-login penalty. Each
//! operation falls back to this instance's own limits while Redis is
//! unreachable if `state.on_unavailable` is `serve`, and refuses the login
//! if it is `refuse`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::warn;

use super::limits::{Admission, Crowded, Held, Key, Limiters, Slot, KNOWN_FOR};
use super::login_delay::LoginDelays;
use crate::config::{Config, OnUnavailable, RedisState};
use crate::metrics::{Metrics, StoreOperation};
use crate::state::redis::{Admit, LeaseId, PenaltyRule, Redis};

pub(crate) struct Cluster {
    redis: Arc<Redis>,
    on_unavailable: OnUnavailable,
    lease: Duration,
    /// Leases one user may hold at once; 0 for any number.
    max_sessions: usize,
    /// None when the penalty is off.
    rule: Option<PenaltyRule>,
    metrics: Arc<Metrics>,
}

/// A user and a client network as every instance names them.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    pub(crate) network: String,
    pub(crate) user: String,
}

/// Why the cluster turned a login away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turned {
    Crowded,
    /// Redis failed and `on_unavailable` is `refuse`.
    StoreDown,
}

/// What keeps a session counted against its user: this instance's slot,
/// or a lease on Redis renewed until the session ends. Held for what its
/// drop releases.
#[expect(dead_code, reason = "held, never read")]
pub(crate) enum SessionSlot {
    Local(Slot<Key>),
    Lease(Lease),
    /// No per-user limit: nothing to count, nothing written to Redis.
    Unlimited,
}

pub(crate) struct Lease {
    redis: Arc<Redis>,
    id: Arc<LeaseId>,
    renewal: JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let (redis, id) = (self.redis.clone(), self.id.clone());
        // Released in the background; if that fails the lease expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = redis.release(&id).await;
            });
        }
    }
}

impl Cluster {
    pub(crate) fn new(
        redis: Arc<Redis>,
        settings: &RedisState,
        on_unavailable: OnUnavailable,
        config: &Config,
        limits: &Limiters,
        metrics: Arc<Metrics>,
    ) -> Cluster {
        let l = &config.limits;
        Cluster {
            redis,
            on_unavailable,
            lease: settings.lease,
            max_sessions: if config.session.exclusive {
                1
            } else {
                l.sessions_per_user
            },
            rule: (!l.auth_penalty_max.is_zero()).then(|| PenaltyRule {
                max_delay: l.auth_penalty_max,
                window: limits.window(),
                queue: l.auth_attempts_queued_per_user.max(1),
            }),
            metrics,
        }
    }

    pub(crate) fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    pub(crate) fn ids(limits: &Limiters, ip: IpAddr, canonical: &str) -> Ids {
        Ids {
            network: limits.keys.network_id(ip),
            user: limits.keys.user_id(canonical),
        }
    }

    fn down(&self, operation: StoreOperation, e: &dyn std::fmt::Display) -> Result<(), Turned> {
        self.metrics.store_failed(operation);
        warn!(error = %e, on_unavailable = self.on_unavailable.as_str(), "state store unreachable");
        match self.on_unavailable {
            OnUnavailable::Refuse => Err(Turned::StoreDown),
            OnUnavailable::Serve => Ok(()),
        }
    }

    /// Queues a login attempt on the cluster's penalty; with Redis down
    /// and `serve`, on this instance's.
    pub(crate) async fn admit(
        &self,
        limits: &Limiters,
        (network, user): (Key, Key),
        ids: &Ids,
    ) -> Result<Admission, Turned> {
        let Some(rule) = self.rule else {
            return Ok(Admission {
                wait: Duration::ZERO,
                held: Held::Network,
                in_flight: None,
            });
        };
        match self.redis.admit(&ids.network, &ids.user, rule).await {
            Ok(Admit::Crowded) => Err(Turned::Crowded),
            Ok(Admit::Wait {
                wait,
                by_user,
                known,
            }) => {
                let in_flight = match known {
                    true => None,
                    false => Some(limits.in_flight(user).map_err(|Crowded| Turned::Crowded)?),
                };
                Ok(Admission {
                    wait,
                    held: if by_user { Held::User } else { Held::Network },
                    in_flight,
                })
            }
            Err(e) => {
                self.down(StoreOperation::Penalty, &e)?;
                limits
                    .admit(network, user, Instant::now())
                    .map_err(|Crowded| Turned::Crowded)
            }
        }
    }

    /// Books a failed login on both the cluster's and this instance's
    /// penalty (the latter is what `serve` falls back to).
    pub(crate) async fn failed(&self, ids: &Ids) {
        if let Some(rule) = self.rule {
            if let Err(e) = self.redis.failed(&ids.network, &ids.user, rule).await {
                self.metrics.store_failed(StoreOperation::Penalty);
                warn!(error = %e, "state store unreachable: failed login not shared");
            }
        }
    }

    pub(crate) async fn succeeded(&self, ids: &Ids) {
        if self.rule.is_some() {
            if let Err(e) = self
                .redis
                .succeeded(&ids.network, &ids.user, KNOWN_FOR)
                .await
            {
                self.metrics.store_failed(StoreOperation::Penalty);
                warn!(error = %e, "state store unreachable: login not shared");
            }
        }
    }

    /// LOGIN-DELAY across the cluster: true when the user may log in now;
    /// with Redis down and `serve`, this instance's table decides.
    pub(crate) async fn login_delay(
        &self,
        delays: &LoginDelays,
        owner: Key,
        user_id: &str,
    ) -> Result<bool, Turned> {
        match self.redis.login_delay(user_id, delays.delay()).await {
            Ok(admitted) => Ok(admitted),
            Err(e) => {
                self.down(StoreOperation::LoginDelay, &e)?;
                Ok(delays.admit(owner, Instant::now()))
            }
        }
    }

    /// Counts a proven session against its user across the cluster: `None`
    /// when the user has as many as allowed.
    pub(crate) async fn session(
        &self,
        limits: &Limiters,
        owner: Key,
        user_id: &str,
    ) -> Result<Option<SessionSlot>, Turned> {
        if self.max_sessions == 0 {
            return Ok(Some(SessionSlot::Unlimited));
        }
        match self
            .redis
            .lease(user_id, None, self.max_sessions, self.lease)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(id)) => Ok(Some(SessionSlot::Lease(self.renewed(Arc::new(id))))),
            Err(e) => {
                self.down(StoreOperation::Lease, &e)?;
                Ok(limits.per_user.acquire(owner).map(SessionSlot::Local))
            }
        }
    }

    /// Renews the lease every third of its time until dropped. A renewal
    /// that fails (Redis away) is retried; the session goes on meanwhile.
    fn renewed(&self, id: Arc<LeaseId>) -> Lease {
        let (redis, lease, metrics) = (self.redis.clone(), self.lease, self.metrics.clone());
        let (max, held) = (self.max_sessions, id.clone());
        let renewal = tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match redis.lease("", Some(&held), max, lease).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        warn!("session lease lost while Redis was away; the session goes on")
                    }
                    Err(_) => metrics.store_failed(StoreOperation::Lease),
                }
            }
        });
        Lease {
            redis: self.redis.clone(),
            id,
            renewal,
        }
    }
}
