//! The `state` section: where the UIDL memory (and, on Redis, the
//! cluster-wide session leases and login penalty) is kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::ConfigErrorKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The directory holding the embedded store's file (one instance).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Redis or Valkey server shared by every instance.
    #[serde(default)]
    pub redis: Option<RedisState>,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisState {
    /// `redis://host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// The password (first line), read as a secret file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Put before every key, so that several gateways can share a server.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Bound on each command, connecting included.
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// How long a session's lease outlives its last renewal: the time a
    /// user waits after the instance holding their session died.
    #[serde(default = "default_lease", deserialize_with = "duration::deserialize")]
    pub lease: Duration,
}

/// What a new login gets while the store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// `-ERR [SYS/TEMP]`: without its memory popgate cannot promise stable
    /// UIDLs, nor the cluster's session lock and penalty.
    #[default]
    Refuse,
    /// Template UIDLs, and this instance's own session limit and penalty.
    Serve,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Refuse => "refuse",
            OnUnavailable::Serve => "serve",
        }
    }
}

fn default_prefix() -> String {
    "popgate:".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

impl State {
    /// The section's own checks: the failing key (below `state`) and why.
    pub(super) fn check(&self) -> Option<(Vec<&'static str>, ConfigErrorKind)> {
        use ConfigErrorKind::*;
        match (&self.path, &self.redis) {
            (Some(_), Some(_)) => {
                let why = "state.path (embedded store) and state.redis are exclusive: pick one";
                return Some((vec!["state", "redis"], Conflict(why.into())));
            }
            (None, None) => {
                let why = "state needs path (embedded store) or redis";
                return Some((vec!["state"], Requires(why.into())));
            }
            _ => {}
        }
        let r = self.redis.as_ref()?;
        if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
            let why = "must start with redis:// or rediss://";
            return Some((vec!["state", "redis", "url"], Requires(why.into())));
        }
        if r.timeout < Duration::from_millis(10) {
            return Some((vec!["state", "redis", "timeout"], TooSmall("10ms".into())));
        }
        if r.lease < Duration::from_secs(1) {
            return Some((vec!["state", "redis", "lease"], TooSmall("1s".into())));
        }
        None
    }
}
