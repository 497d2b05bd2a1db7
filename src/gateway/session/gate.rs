//! What a login passes before its credentials are checked: a name fit to
//! send upstream and to log, no client-named master user unless allowed,
//! and the failed-login penalty of its network and canonical user.

use std::time::Instant;

use tracing::info;

use super::{Pop3Session, Reply};
use crate::gateway::answer::{LoginFailure, Refusal};
use crate::gateway::cluster::{Cluster, Ids, Turned};
use crate::gateway::limits::{Admission, Held, Key, Slot};
use crate::metrics::{LoginResult, Mechanism, ThrottleKind};

/// Longest login name or authzid accepted (Dovecot allows about 6 KB,
/// which would let one failure cost kilobytes of bookkeeping).
pub(super) const MAX_NAME: usize = 255;

/// A login attempt let through, with the keys its outcome is booked on;
/// it counts as in flight for its user until dropped.
pub(super) struct Admitted {
    pub(super) network: Key,
    pub(super) user: Key,
    /// The same, as every instance names them; with a cluster only.
    pub(super) ids: Option<Ids>,
    _in_flight: Option<Slot<Key>>,
}

/// Short enough, and nothing that could forge a log line or confuse the
/// upstream's parser.
fn acceptable(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(char::is_control)
}

impl Pop3Session {
    /// The user a login stands for, whatever the spelling: the authzid if
    /// one is given, without a master user's part, after routing and
    /// rewriting, lower-cased. `u*master`, `u+east` and `u@dom` are one.
    fn canonical(&self, name: &str, authzid: &str) -> String {
        let named = if authzid.is_empty() { name } else { authzid };
        let separator = &self.ctx.config.auth.master_separator;
        let named = match named.split_once(separator.as_str()) {
            Some((user, _)) if !separator.is_empty() => user,
            _ => named,
        };
        self.ctx.router.route(named).user.to_lowercase()
    }

    /// A client naming the master user: an authzid that differs from the
    /// login name, or a name holding the master separator.
    fn names_master(&self, name: &str, authzid: &str) -> bool {
        let auth = &self.ctx.config.auth;
        let separator = auth.master_separator.as_str();
        !auth.client_master_login
            && ((!authzid.is_empty() && authzid != name)
                || (!separator.is_empty() && name.contains(separator)))
    }

    /// Waits out the penalty, then lets the attempt on to the credentials
    /// check, or refuses it (the answer is queued) without asking anyone.
    pub(super) async fn admit(
        &mut self,
        mechanism: Mechanism,
        name: &str,
        authzid: &str,
    ) -> Result<Admitted, Reply> {
        let fit = acceptable(name) && (authzid.is_empty() || acceptable(authzid));
        let ctx = self.ctx.clone();
        let limits = &ctx.limits;
        let canonical = self.canonical(name, authzid);
        let ip = self.ends.client.ip();
        let (network, user) = (limits.keys.network(ip), limits.keys.user(&canonical));
        let ids = ctx
            .cluster
            .as_ref()
            .map(|_| Cluster::ids(limits, ip, &canonical));
        let m = self.ctx.metrics.clone();
        let mechanism_name = mechanism.as_str();
        let admission = match (&ctx.cluster, &ids) {
            (Some(cluster), Some(ids)) => cluster.admit(limits, (network, user), ids).await,
            _ => limits
                .admit(network, user, Instant::now())
                .map_err(|_| Turned::Crowded),
        };
        let in_flight = match admission {
            Err(Turned::StoreDown) => {
                m.login(mechanism, LoginResult::StoreUnavailable);
                info!(
                    mechanism = mechanism_name,
                    result = "store_unavailable",
                    "login refused"
                );
                return Err(self.refuse(Refusal::Login(LoginFailure::StoreUnavailable)));
            }
            Err(Turned::Crowded) => {
                m.throttled(ThrottleKind::User);
                m.login(mechanism, LoginResult::Throttled);
                info!(
                    mechanism = mechanism_name,
                    result = "throttled",
                    "login refused"
                );
                self.auth_failures += 1;
                return Err(self.refuse(Refusal::Login(LoginFailure::Throttled)));
            }
            Ok(Admission {
                wait,
                held,
                in_flight,
            }) => {
                if !wait.is_zero() {
                    let (kind, by) = match held {
                        Held::Network => (ThrottleKind::Ip, "network"),
                        Held::User => (ThrottleKind::User, "user"),
                    };
                    m.throttled(kind);
                    let wait_ms = wait.as_millis() as u64;
                    info!(mechanism = mechanism_name, wait_ms, by, "login held back");
                    tokio::time::sleep(wait).await;
                }
                in_flight
            }
        };
        let admitted = Admitted {
            network,
            user,
            ids,
            _in_flight: in_flight,
        };
        let reason = if !fit {
            "unacceptable name"
        } else if self.names_master(name, authzid) {
            "master user named by the client"
        } else {
            return Ok(admitted);
        };
        // Refused here: the name itself is not logged, it may be anything.
        m.login(mechanism, LoginResult::AuthFailed);
        info!(
            mechanism = mechanism_name,
            result = "auth_failed",
            reason,
            "login refused"
        );
        self.failed_login(&admitted).await;
        Err(self.refuse(Refusal::Login(LoginFailure::AuthFailed)))
    }

    /// Books a failed login against its network and user, here and, with
    /// a cluster, for every instance.
    pub(super) async fn failed_login(&mut self, admitted: &Admitted) {
        let ctx = self.ctx.clone();
        ctx.limits
            .failed(admitted.network, admitted.user, Instant::now());
        if let (Some(cluster), Some(ids)) = (&ctx.cluster, &admitted.ids) {
            cluster.failed(ids).await;
        }
        self.auth_failures += 1;
    }

    pub(super) async fn succeeded_login(&self, admitted: &Admitted) {
        let ctx = &self.ctx;
        ctx.limits
            .succeeded(admitted.network, admitted.user, Instant::now());
        if let (Some(cluster), Some(ids)) = (&ctx.cluster, &admitted.ids) {
            cluster.succeeded(ids).await;
        }
    }
}
