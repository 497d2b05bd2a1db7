//! The translation between a POP3 session and an IMAP connection.

pub mod login;
pub mod maildrop;
pub mod session;
pub mod uidl;
pub mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashSet;

use crate::config::Config;
use crate::metrics::Metrics;

/// The metrics label of the upstream (one route until routing exists).
pub const DEFAULT_ROUTE: &str = "default";

/// What every session of one server instance shares.
pub struct Context {
    pub config: Config,
    pub metrics: std::sync::Arc<Metrics>,
    pub backend: upstream::Backend,
    /// Users with a session open, when sessions are exclusive.
    locked_users: DashSet<String>,
    next_session: AtomicU64,
}

impl Context {
    /// Prepares everything the config refers to (TLS material); an error
    /// names the key at fault.
    pub fn new(config: Config, metrics: std::sync::Arc<Metrics>) -> Result<Context, String> {
        Ok(Context {
            backend: upstream::Backend::new(&config.upstream)?,
            config,
            metrics,
            locked_users: DashSet::new(),
            next_session: AtomicU64::new(1),
        })
    }

    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the user's maildrop lock, or `None` if another session holds it.
    pub fn lock_user(self: &std::sync::Arc<Self>, user: &str) -> Option<UserLock> {
        let key = user.to_lowercase();
        self.locked_users.insert(key.clone()).then(|| UserLock {
            ctx: self.clone(),
            key,
        })
    }
}

/// Held for the life of a session when sessions are exclusive.
pub struct UserLock {
    ctx: std::sync::Arc<Context>,
    key: String,
}

impl Drop for UserLock {
    fn drop(&mut self) {
        self.ctx.locked_users.remove(&self.key);
    }
}
