//! The translation between a POP3 session and an IMAP connection.

pub(crate) mod answer;
pub mod backend;
pub(crate) mod cluster;
#[cfg(test)]
mod context_tests;
pub(crate) mod credentials;
pub(crate) mod fetch;
pub(crate) mod fingerprint;
pub mod import;
pub(crate) mod keys;
pub(crate) mod limits;
pub(crate) mod login;
pub(crate) mod login_delay;
pub(crate) mod maildrop;
pub(crate) mod migration;
pub(crate) mod password_hash;
pub mod pool;
pub mod prelogin;
pub(crate) mod reload;
pub(crate) mod route;
pub mod session;
pub(crate) mod uidls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
pub use crate::config::DEFAULT_ROUTE;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::state::embedded::Embedded;
use backend::Backend;

/// What every session of one server instance shares.
pub struct Context {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Every backend by route name; `default` is the top-level upstream.
    pub backends: HashMap<String, Arc<Backend>>,
    pub(crate) router: route::Router,
    /// Present when APOP and CRAM-MD5 are enabled.
    pub(crate) credentials: Option<Arc<credentials::Credentials>>,
    /// The upstream master user and password for those logins.
    pub(crate) master: Option<(String, Secret)>,
    /// Kept across config reloads, as are the UIDL memory, the login
    /// delays and the session numbers.
    pub(crate) limits: Arc<limits::Limiters>,
    /// The UIDL memory, when `state` is configured.
    pub(crate) uidls: Option<Arc<uidls::UidlMemory>>,
    /// Session leases and the penalty shared with other instances, when
    /// the state store is Redis.
    pub(crate) cluster: Option<cluster::Cluster>,
    /// The old POP3 server, when `migration` is configured.
    pub(crate) migration: Option<Arc<crate::migration::Source>>,
    /// The token brokers, by route, for routes with `oauth2`.
    pub(crate) brokers: HashMap<String, Arc<crate::oauth::broker::Broker>>,
    /// Logins booked for `policy.login_delay`, when it is set.
    pub(crate) login_delays: Option<Arc<login_delay::LoginDelays>>,
    next_session: Arc<AtomicU64>,
}

/// Every backend by route name, `default` for `upstream`; an error names
/// the key at fault.
fn backends(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Arc<Backend>>, String> {
    let mut backends = HashMap::new();
    backends.insert(
        DEFAULT_ROUTE.to_string(),
        Backend::new(DEFAULT_ROUTE, "upstream", &config.upstream, metrics.clone())?,
    );
    for (name, up) in &config.upstreams {
        let key = format!("upstreams.{name}");
        backends.insert(name.clone(), Backend::new(name, &key, up, metrics.clone())?);
    }
    Ok(backends)
}

/// The upstream master user and its password, read from its file.
fn master(config: &Config) -> Result<Option<(String, Secret)>, String> {
    let auth = &config.auth;
    Ok(match (&auth.master_user, &auth.master_password_file) {
        (Some(user), Some(path)) => Some((
            user.clone(),
            crate::files::master_password(path)
                .map_err(|e| format!("auth.master_password_file: {e}"))?,
        )),
        _ => None,
    })
}

impl Context {
    /// Prepares everything the config refers to (TLS material); an error
    /// names the key at fault.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Context, String> {
        let backends = backends(&config, &metrics)?;
        let auth = &config.auth;
        let credentials = match &auth.credentials_file {
            Some(path) => Some(
                credentials::Credentials::load(path)
                    .map_err(|e| format!("auth.credentials_file: {e}"))?,
            ),
            None => None,
        };
        let master = master(&config)?;
        let limits = Arc::new(limits::Limiters::new(
            &config.limits,
            config.session.exclusive,
        ));
        let mut tokens: Option<Arc<dyn crate::state::tokens::TokenStore>> = None;
        let (uidls, cluster) = match &config.state {
            None => (None, None),
            Some(state) => match (&state.path, &state.redis) {
                (_, Some(settings)) => {
                    let redis = Arc::new(crate::state::redis::Redis::open(settings)?);
                    metrics.init_store("redis");
                    let cluster = cluster::Cluster::new(
                        redis.clone(),
                        settings,
                        state.on_unavailable,
                        &config,
                        &limits,
                        metrics.clone(),
                    );
                    tokens = Some(redis.clone());
                    let memory = uidls::UidlMemory::new(redis, state.on_unavailable);
                    (Some(Arc::new(memory)), Some(cluster))
                }
                (path, None) => {
                    // The config check requires one of the two.
                    let path = path.as_deref().unwrap_or(std::path::Path::new("."));
                    let store = Embedded::open(path).map_err(|e| format!("state.path: {e}"))?;
                    metrics.init_store("embedded");
                    let store = Arc::new(store);
                    tokens = Some(store.clone());
                    let memory = uidls::UidlMemory::new(store, state.on_unavailable);
                    (Some(Arc::new(memory)), None)
                }
            },
        };
        let migration = match &config.migration {
            Some(m) => Some(Arc::new(crate::migration::Source::new(&m.pop3)?)),
            None => None,
        };
        let mut brokers = HashMap::new();
        for (key, up) in config.upstreams_by_key() {
            let Some(o) = &up.oauth2 else { continue };
            let route = match config.upstreams.iter().find(|(_, u)| std::ptr::eq(*u, up)) {
                Some((name, _)) => name.as_str(),
                None => DEFAULT_ROUTE,
            };
            let key = format!("{key}.oauth2");
            let broker =
                crate::oauth::broker::Broker::new(route, &key, o, tokens.clone(), metrics.clone())?;
            brokers.insert(route.to_string(), Arc::new(broker));
        }
        let delay = config.policy.login_delay;
        let login_delays =
            (!delay.is_zero()).then(|| Arc::new(login_delay::LoginDelays::new(delay)));
        Ok(Context {
            login_delays,
            brokers,
            uidls,
            migration,
            credentials,
            master,
            backends,
            router: route::Router::new(&config),
            limits,
            cluster,
            config,
            metrics,
            next_session: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Puts the UIDL memory on `store` (a test's), with what a login gets
    /// while it fails.
    pub fn set_state_store(
        &mut self,
        store: Arc<dyn crate::state::StateStore>,
        on_unavailable: crate::config::OnUnavailable,
    ) {
        self.uidls = Some(Arc::new(uidls::UidlMemory::new(store, on_unavailable)));
    }

    /// Whether new logins must be refused for want of the state store.
    pub(crate) fn store_required(&self) -> bool {
        self.config
            .state
            .as_ref()
            .is_some_and(|s| s.on_unavailable == crate::config::OnUnavailable::Refuse)
    }

    pub(crate) fn default_backend(&self) -> &Arc<Backend> {
        &self.backends[DEFAULT_ROUTE]
    }

    pub(crate) fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// How often expired failed-login bookkeeping is swept away.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Sweeps the penalty tables on a timer, so expired entries go whether
/// or not the tables fill up.
pub async fn sweep_limits(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        ctx.limits.sweep(std::time::Instant::now());
        let held = ctx.limits.remembered();
        ctx.metrics.auth_penalty_entries.set(held as i64);
    }
}

/// How often the state store is checked for `/readyz` and the metrics.
const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks the state store on a timer: `popgate_state_store_up`, and
/// `/readyz` unready while it is down and logins need it.
pub async fn watch_store(ctx: Arc<Context>, health: Arc<crate::http::Health>) {
    let Some(memory) = &ctx.uidls else {
        health.store_ok.store(true, Ordering::Relaxed);
        return;
    };
    let backend = match ctx.cluster {
        Some(_) => "redis",
        None => "embedded",
    };
    let gauge = ctx.metrics.state_store_up.with_label_values(&[backend]);
    let mut tick = tokio::time::interval(STORE_CHECK_EVERY);
    let mut was_up = true;
    loop {
        tick.tick().await;
        let up = match memory.store().ping().await {
            Ok(()) => true,
            Err(e) => {
                ctx.metrics
                    .store_failed(crate::metrics::StoreOperation::Ping);
                if was_up {
                    tracing::warn!(backend, error = %e, "state store unreachable");
                }
                false
            }
        };
        if up && !was_up {
            tracing::info!(backend, "state store reachable again");
        }
        was_up = up;
        gauge.set(i64::from(up));
        health
            .store_ok
            .store(up || !ctx.store_required(), Ordering::Relaxed);
    }
}
