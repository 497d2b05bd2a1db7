//! The `migration` section: the old POP3 server whose UIDLs a mailbox
//! keeps when popgate first sees it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::ConfigErrorKind;
use super::{duration, HostPort, UpstreamTls};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    pub pop3: Pop3Source,
}

/// The old POP3 server, asked once per mailbox for its UIDLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Source {
    /// `host:port` of the old POP3 server.
    pub address: HostPort,
    /// `none`, `starttls` (STLS) or `implicit` (POP3S).
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA certificates to verify it with; the system's roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified; the host of `address` when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub login: SourceLogin,
    /// For `login: master`: logs in as `user<master_separator>master_user`.
    #[serde(default)]
    pub master_user: Option<String>,
    /// File whose first line is the master user's password.
    #[serde(default)]
    pub master_password_file: Option<PathBuf>,
    #[serde(default = "default_separator")]
    pub master_separator: String,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Bound on connecting and on each answer of the old server.
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
}

/// How popgate logs in to the old server on a user's behalf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceLogin {
    /// With the name and password the user just gave popgate.
    #[default]
    User,
    /// As the master user, for every user.
    Master,
}

/// What a login does when the old server cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// `-ERR [SYS/TEMP]`, nothing stored: the next login tries again.
    #[default]
    Refuse,
    /// Template UIDLs, stored: the old server is not asked again.
    Continue,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Refuse => "refuse",
            OnFailure::Continue => "continue",
        }
    }
}

fn default_separator() -> String {
    "*".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Migration {
    /// The section's own checks: the failing key (below `migration`) and why.
    pub(super) fn check(&self, has_state: bool) -> Option<(Vec<&'static str>, ConfigErrorKind)> {
        use ConfigErrorKind::*;
        let p = &self.pop3;
        if !has_state {
            let why = "migration needs a state section: the old UIDLs are stored there";
            return Some((vec!["migration"], Requires(why.into())));
        }
        if p.login == SourceLogin::Master
            && (p.master_user.is_none() || p.master_password_file.is_none())
        {
            let why = "login: master needs master_user and master_password_file";
            return Some((vec!["migration", "pop3", "login"], Requires(why.into())));
        }
        if p.master_user.as_deref() == Some("") {
            return Some((vec!["migration", "pop3", "master_user"], Empty));
        }
        if p.master_separator.is_empty() {
            return Some((vec!["migration", "pop3", "master_separator"], Empty));
        }
        if p.tls == UpstreamTls::None && p.ca_file.is_some() {
            let why = "ca_file needs tls: starttls or implicit";
            return Some((vec!["migration", "pop3", "tls"], Requires(why.into())));
        }
        if p.timeout < Duration::from_millis(100) {
            let min = TooSmall("100ms".into());
            return Some((vec!["migration", "pop3", "timeout"], min));
        }
        None
    }
}
