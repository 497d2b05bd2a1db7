//! Loading, the checks that run after deserialization, and their typed
//! errors. serde reports a bad value with its key and line itself; the range
//! and cross-field checks here name a key path, and `locate` finds its line
//! in the text, so every error names both.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::locate::{locate, KeyPath};
use super::{Config, ListenerTls, Upstream, UpstreamTls, DEFAULT_ROUTE};
use crate::files::FileError;

/// `.` and eight hex digits after the UIDLs of every folder but the first.
pub const FOLDER_SUFFIX_LEN: usize = 9;

/// What is wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// Rejected by the YAML parser or by a value's own parsing; the message
    /// already names the key and the line.
    #[error("{0}")]
    Syntax(String),
    #[error("must be at least {0}")]
    TooSmall(String),
    #[error("must be between {0} and {1}")]
    OutOfRange(String, String),
    #[error("must not be empty")]
    Empty,
    /// A setting that only works together with another one.
    #[error("{0}")]
    Requires(String),
    /// A name that must refer to something defined elsewhere.
    #[error("no upstream called {0:?}")]
    UnknownUpstream(String),
    /// A name or address that two settings claim.
    #[error("{0}")]
    Conflict(String),
}

/// A config error: the kind, the key it concerns and where that key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub key: Option<KeyPath>,
    /// Line and column, from 1.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.kind)?;
        if let Some((line, column)) = self.location {
            write!(f, " at line {line} column {column}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A failed check before its key is located.
struct Invalid(KeyPath, ConfigErrorKind);

fn at(keys: &[&str], kind: ConfigErrorKind) -> Invalid {
    Invalid(KeyPath::new(keys), kind)
}

fn at_least(keys: &[&str], min: &str) -> Invalid {
    at(keys, ConfigErrorKind::TooSmall(min.into()))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|message| FileError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates; the error names the key and the line.
    pub fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml(text).map_err(|e| e.to_string())
    }

    /// A config with one listener and the upstream `imap.test:143`, for
    /// unit tests: `upstream` adds lines to `upstream:` (indented by two),
    /// `extra` adds top-level YAML.
    #[cfg(test)]
    pub(crate) fn for_tests(upstream: &str, extra: &str) -> Config {
        Config::parse(&format!(
            "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  \
             address: \"imap.test:143\"\n{upstream}{extra}"
        ))
        .expect("test config")
    }

    /// As `parse`, with the error typed.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError {
            kind: ConfigErrorKind::Syntax(e.to_string()),
            key: None,
            location: e.location().map(|l| (l.line(), l.column())),
        })?;
        config
            .validate()
            .map_err(|Invalid(key, kind)| ConfigError {
                location: locate(text, &key),
                key: Some(key),
                kind,
            })?;
        Ok(config)
    }

    /// Every backend with the config key that defines it.
    pub fn upstreams_by_key(&self) -> impl Iterator<Item = (KeyPath, &Upstream)> {
        std::iter::once((KeyPath::new(&["upstream"]), &self.upstream)).chain(
            self.upstreams
                .iter()
                .map(|(name, up)| (KeyPath::new(&["upstreams", name]), up)),
        )
    }

    /// Settings that work but are risky; `--check` prints them and the
    /// server logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let old = self.migration.as_ref().map(|m| &m.pop3);
        let old_plain = old
            .filter(|p| p.tls == UpstreamTls::None && !is_loopback(p.address.host()))
            .map(|p| {
                format!(
                    "migration.pop3.tls: none sends passwords to {} unencrypted over the network; \
                     use starttls or implicit unless that path is private",
                    p.address.0
                )
            });
        self.upstreams_by_key()
            .filter(|(_, up)| up.tls == UpstreamTls::None && !is_loopback(up.address.host()))
            .map(|(key, up)| {
                format!(
                    "{key}.tls: none sends every password to {} unencrypted over the network; \
                     use starttls or implicit unless that path is private",
                    up.address.0
                )
            })
            .chain(old_plain)
            .collect()
    }

    fn validate(&self) -> Result<(), Invalid> {
        use ConfigErrorKind::*;
        if self.session.idle_timeout < Duration::from_secs(1) {
            return Err(at_least(&["session", "idle_timeout"], "1s"));
        }
        if !(255..=1 << 20).contains(&self.session.max_line_length) {
            let range = OutOfRange("255".into(), "1048576".into());
            return Err(at(&["session", "max_line_length"], range));
        }
        if self.limits.auth_penalty_ipv6_prefix > 128 {
            let range = OutOfRange("0".into(), "128".into());
            return Err(at(&["limits", "auth_penalty_ipv6_prefix"], range));
        }
        let counts: [(&[&str], u64); 4] = [
            (
                &["limits", "auth_failures_per_connection"],
                self.limits.auth_failures_per_connection.into(),
            ),
            (
                &["limits", "auth_penalty_memory"],
                self.limits.auth_penalty_memory as u64,
            ),
            (
                &["limits", "auth_attempts_queued_per_user"],
                self.limits.auth_attempts_queued_per_user.into(),
            ),
            (
                &["session", "max_connections"],
                self.session.max_connections as u64,
            ),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(at_least(key, "1"));
        }
        for (i, l) in self.listeners.0.iter().enumerate() {
            let key = KeyPath::new(&["listeners"]).index(i);
            if l.proxy_protocol && l.proxy_trusted.is_empty() {
                let why = "proxy_protocol needs the load balancers' networks";
                return Err(Invalid(key.key("proxy_trusted"), Requires(why.into())));
            }
            if l.tls != ListenerTls::None && self.tls.is_none() {
                let why = format!(
                    "{} needs a certificate: add a top-level tls section",
                    l.tls.label()
                );
                return Err(Invalid(key.key("tls"), Requires(why)));
            }
        }
        for (key, up) in self.upstreams_by_key() {
            if up.tls == UpstreamTls::None && (up.ca_file.is_some() || up.dangerous_skip_verify) {
                let why = "ca_file and dangerous_skip_verify need tls: starttls or implicit";
                return Err(Invalid(key.key("tls"), Requires(why.into())));
            }
        }
        for (key, up) in self.upstreams_by_key() {
            let Some(o) = &up.oauth2 else { continue };
            let key = key.key("oauth2");
            if o.client_id.is_empty() {
                return Err(Invalid(key.key("client_id"), Empty));
            }
            match o.flow {
                super::oauth2::Flow::RefreshToken if self.state.is_none() => {
                    let why = "flow refresh_token keeps each user's tokens in the state store: \
                               add a state section";
                    return Err(Invalid(key.key("flow"), Requires(why.into())));
                }
                // The application token opens every mailbox: popgate must
                // check the POP3 password itself.
                super::oauth2::Flow::ClientCredentials if self.auth.credentials_file.is_none() => {
                    let why = "flow client_credentials opens every mailbox with one token, \
                               so popgate checks POP3 passwords itself: set auth.credentials_file";
                    return Err(Invalid(key.key("flow"), Requires(why.into())));
                }
                _ => {}
            }
        }
        if self.upstreams.contains_key(DEFAULT_ROUTE) {
            let why = "the name `default` is the top-level upstream";
            return Err(at(&["upstreams", DEFAULT_ROUTE], Conflict(why.into())));
        }
        for (domain, route) in &self.routing.domains {
            if route.upstream != DEFAULT_ROUTE && !self.upstreams.contains_key(&route.upstream) {
                let key = ["routing", "domains", domain, "upstream"];
                return Err(at(&key, UnknownUpstream(route.upstream.clone())));
            }
        }
        // A route whose application token opens every mailbox logs APOP and
        // CRAM-MD5 users in with it; the others need the master user.
        let all_app_token = self.upstreams_by_key().all(|(_, up)| {
            up.oauth2
                .as_ref()
                .is_some_and(|o| o.flow == super::oauth2::Flow::ClientCredentials)
        });
        if self.auth.credentials_file.is_some()
            && !all_app_token
            && (self.auth.master_user.is_none() || self.auth.master_password_file.is_none())
        {
            let why = "APOP and CRAM-MD5 need auth.master_user and auth.master_password_file";
            return Err(at(&["auth", "credentials_file"], Requires(why.into())));
        }
        if self
            .tls
            .as_ref()
            .is_some_and(|t| t.reload_interval < Duration::from_millis(100))
        {
            return Err(at_least(&["tls", "reload_interval"], "100ms"));
        }
        if self.auth.reload_interval < Duration::from_millis(100) {
            return Err(at_least(&["auth", "reload_interval"], "100ms"));
        }
        if self.upstream.health_check_interval < Duration::from_millis(100) {
            return Err(at_least(&["upstream", "health_check_interval"], "100ms"));
        }
        if let Some(m) = &self.metrics {
            if self
                .listeners
                .0
                .iter()
                .any(|l| l.address == m.address && m.address.port() != 0)
            {
                let why = "already used by a POP3 listener";
                return Err(at(&["metrics", "address"], Conflict(why.into())));
            }
            if m.max_connections == 0 {
                return Err(at_least(&["metrics", "max_connections"], "1"));
            }
            if m.max_connections_per_ip == 0 {
                return Err(at_least(&["metrics", "max_connections_per_ip"], "1"));
            }
        }
        let folders = &self.mailbox.0;
        if folders.is_empty() || folders.iter().any(String::is_empty) {
            return Err(at(&["mailbox"], Empty));
        }
        if folders
            .iter()
            .enumerate()
            .any(|(i, f)| folders[..i].contains(f))
        {
            return Err(at(
                &["mailbox"],
                Conflict("a folder is listed twice".into()),
            ));
        }
        if folders.len() > 1 && self.uidl_format.max_len() > 70 - FOLDER_SUFFIX_LEN {
            let why = format!(
                "with several folders UIDLs get a {FOLDER_SUFFIX_LEN}-character folder suffix: \
                 the template may make at most {} characters",
                70 - FOLDER_SUFFIX_LEN
            );
            return Err(at(&["uidl_format"], Conflict(why)));
        }
        if let Some((key, kind)) = self.policy.check() {
            return Err(at(&key, kind));
        }
        if let Some((key, kind)) = self.delete.check(&self.mailbox.0) {
            return Err(at(&key, kind));
        }
        if let Some((key, kind)) = self.state.as_ref().and_then(|s| s.check()) {
            return Err(at(&key, kind));
        }
        if let Some((key, kind)) = self
            .migration
            .as_ref()
            .and_then(|m| m.check(self.state.is_some()))
        {
            return Err(at(&key, kind));
        }
        Ok(())
    }
}

/// Whether a host names this machine: a loopback address or `localhost`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::super::duration;
    use super::*;

    const MINIMAL: &str =
        "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"127.0.0.1:143\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.mailbox.0, ["INBOX"]);
        assert_eq!(c.uidl_format.to_string(), "%08Xu%08Xv");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(600));
        assert!(c.session.mark_seen);
        assert!(c.shutdown.drain_timeout < Duration::from_secs(30));
    }

    #[test]
    fn a_configured_uidl_format_is_the_one_used() {
        let c = Config::parse(&format!("{MINIMAL}uidl_format: \"%u.%v\"\n")).unwrap();
        assert_eq!(c.uidl_format.to_string(), "%u.%v");
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = Config::parse(&format!("{MINIMAL}mailbx: INBOX\n")).unwrap_err();
        assert!(e.contains("mailbx") && e.contains("line 5"), "{e}");

        let e = Config::parse(&MINIMAL.replace("1110", "x")).unwrap_err();
        assert!(
            e.contains("listeners[0].address") && e.contains("line 2"),
            "{e}"
        );

        let e = Config::parse(&format!("{MINIMAL}uidl_format: \"%u%m\"\n")).unwrap_err();
        assert!(
            e.contains("uidl_format") && e.contains("%m") && e.contains("line 5"),
            "{e}"
        );

        let e = Config::parse(&format!("{MINIMAL}session:\n  idle_timeout: 10y\n")).unwrap_err();
        assert!(
            e.contains("session.idle_timeout") && e.contains("line 6"),
            "{e}"
        );

        let e = Config::parse("listeners: []\nupstream:\n  address: \"h:143\"\n").unwrap_err();
        assert!(e.contains("listeners") && e.contains("line 1"), "{e}");

        let e = Config::parse(&MINIMAL.replace("127.0.0.1:143", "imap.example.org")).unwrap_err();
        assert!(
            e.contains("upstream.address") && e.contains("needs a port"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration::parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration::parse("7"), Ok(Duration::from_secs(7)));
        assert!(duration::parse("1d").is_err());
        assert!(duration::parse("").is_err());
    }
}
