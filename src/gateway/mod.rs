//! The translation between a POP3 session and an IMAP connection.

pub mod limits;
pub mod login;
pub mod maildrop;
pub mod session;
pub mod uidl;
pub mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::metrics::Metrics;

/// The metrics label of the upstream (one route until routing exists).
pub const DEFAULT_ROUTE: &str = "default";

/// What every session of one server instance shares.
pub struct Context {
    pub config: Config,
    pub metrics: std::sync::Arc<Metrics>,
    pub backend: upstream::Backend,
    pub limits: limits::Limits,
    next_session: AtomicU64,
}

impl Context {
    /// Prepares everything the config refers to (TLS material); an error
    /// names the key at fault.
    pub fn new(config: Config, metrics: std::sync::Arc<Metrics>) -> Result<Context, String> {
        Ok(Context {
            backend: upstream::Backend::new(&config.upstream)?,
            limits: limits::Limits::new(&config.limits, config.session.exclusive),
            config,
            metrics,
            next_session: AtomicU64::new(1),
        })
    }

    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
