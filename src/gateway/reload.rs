//! SIGHUP: the config read again. A new [`Context`] serves the sessions
//! that start from then on; running sessions keep the one they started
//! with. What holds state carries over (the limits' counts and penalty
//! tables, the UIDL memory, the login delays, the session numbers), and
//! settings bound to what was set up at start are refused with the key to
//! restart for.

use std::fmt::Debug;
use std::sync::Arc;

use super::{cluster, login_delay, route, Context, DEFAULT_ROUTE};
use crate::config::Config;

/// The first setting of `new` that only a restart can apply, if any.
pub(crate) fn restart_needed(old: &Config, new: &Config) -> Option<&'static str> {
    // The brokers hold tokens and run their own tasks: kept as started.
    fn oauth2(c: &Config) -> Vec<(&str, Option<&crate::config::oauth2::OAuth2>)> {
        let mut v = vec![(DEFAULT_ROUTE, c.upstream.oauth2.as_ref())];
        v.extend(
            c.upstreams
                .iter()
                .map(|(n, u)| (n.as_str(), u.oauth2.as_ref())),
        );
        v
    }
    fn same<T: Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }
    let (ol, nl) = (&old.limits, &new.limits);
    let penalty = |l: &crate::config::Limits| {
        (
            l.auth_penalty_max,
            l.auth_penalty_memory,
            l.auth_penalty_ipv6_prefix,
            l.auth_attempts_queued_per_user,
        )
    };
    [
        // Bound sockets.
        (!same(&old.listeners, &new.listeners), "listeners"),
        (!same(&old.metrics, &new.metrics), "metrics"),
        // Opened stores, watched files, started tasks.
        (!same(&old.state, &new.state), "state"),
        (!same(&old.migration, &new.migration), "migration"),
        (
            !same(&oauth2(old), &oauth2(new)),
            "upstream.oauth2 (or an upstreams entry's)",
        ),
        (!same(&old.auth, &new.auth), "auth"),
        (!same(&old.tls, &new.tls), "tls"),
        (!same(&old.shutdown, &new.shutdown), "shutdown"),
        (
            old.session.max_connections != new.session.max_connections,
            "session.max_connections",
        ),
        (old.log.format != new.log.format, "log.format"),
        (penalty(ol) != penalty(nl), "limits.auth_penalty_*"),
    ]
    .into_iter()
    .find_map(|(changed, key)| changed.then_some(key))
}

impl Context {
    /// The context for `config`, carrying this one's state over. Nothing
    /// of the running context changes unless this succeeds and the caller
    /// installs the result.
    pub(crate) fn reloaded(&self, config: Config) -> Result<Context, String> {
        let metrics = self.metrics.clone();
        let backends = super::backends(&config, &metrics)?;
        // `auth` is unchanged; the password file is read again all the same.
        let master = super::master(&config)?;
        let cluster = match (&self.cluster, config.state.as_ref()) {
            (Some(c), Some(state)) => state.redis.as_ref().map(|settings| {
                cluster::Cluster::new(
                    c.redis().clone(),
                    settings,
                    state.on_unavailable,
                    &config,
                    &self.limits,
                    metrics.clone(),
                )
            }),
            _ => None,
        };
        let delay = config.policy.login_delay;
        let login_delays = match &self.login_delays {
            Some(d) if d.delay() == delay => Some(d.clone()),
            _ => (!delay.is_zero()).then(|| Arc::new(login_delay::LoginDelays::new(delay))),
        };
        // Last, as it cannot fail: the limits are shared with the running
        // sessions and apply to slots taken from now on.
        self.limits.retune(&config.limits, config.session.exclusive);
        Ok(Context {
            router: route::Router::new(&config),
            credentials: self.credentials.clone(),
            master,
            backends,
            limits: self.limits.clone(),
            uidls: self.uidls.clone(),
            cluster,
            migration: self.migration.clone(),
            login_delays,
            // Restart-only settings: the same brokers, with their tokens.
            brokers: self.brokers.clone(),
            next_session: self.next_session.clone(),
            metrics,
            config,
        })
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
