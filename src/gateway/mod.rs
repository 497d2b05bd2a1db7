//! The translation between a POP3 session and an IMAP connection.

pub(crate) mod answer;
pub mod backend;
pub(crate) mod credentials;
pub(crate) mod fetch;
pub mod import;
pub(crate) mod limits;
pub(crate) mod login;
pub(crate) mod maildrop;
pub(crate) mod migration;
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
    pub(crate) limits: limits::Limiters,
    /// The UIDL memory, when `state` is configured.
    pub(crate) uidls: Option<uidls::UidlMemory>,
    /// The old POP3 server, when `migration` is configured.
    pub(crate) migration: Option<crate::migration::Source>,
    next_session: AtomicU64,
}

impl Context {
    /// Prepares everything the config refers to (TLS material); an error
    /// names the key at fault.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Context, String> {
        let mut backends = HashMap::new();
        backends.insert(
            DEFAULT_ROUTE.to_string(),
            Backend::new(DEFAULT_ROUTE, "upstream", &config.upstream, metrics.clone())?,
        );
        for (name, up) in &config.upstreams {
            let key = format!("upstreams.{name}");
            backends.insert(name.clone(), Backend::new(name, &key, up, metrics.clone())?);
        }
        let auth = &config.auth;
        let credentials = match &auth.credentials_file {
            Some(path) => Some(
                credentials::Credentials::load(path)
                    .map_err(|e| format!("auth.credentials_file: {e}"))?,
            ),
            None => None,
        };
        let master = match (&auth.master_user, &auth.master_password_file) {
            (Some(user), Some(path)) => Some((
                user.clone(),
                crate::files::master_password(path)
                    .map_err(|e| format!("auth.master_password_file: {e}"))?,
            )),
            _ => None,
        };
        let uidls = match &config.state {
            Some(state) => Some(uidls::UidlMemory::open(state)?),
            None => None,
        };
        let migration = match &config.migration {
            Some(m) => Some(crate::migration::Source::new(&m.pop3)?),
            None => None,
        };
        Ok(Context {
            uidls,
            migration,
            credentials,
            master,
            backends,
            router: route::Router::new(&config),
            limits: limits::Limiters::new(&config.limits, config.session.exclusive),
            config,
            metrics,
            next_session: AtomicU64::new(1),
        })
    }

    /// Puts the UIDL memory on `store` (another backend than the
    /// embedded one, or a test's).
    pub fn set_state_store(&mut self, store: Arc<dyn crate::state::StateStore>) {
        self.uidls = Some(uidls::UidlMemory::with_store(store));
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
