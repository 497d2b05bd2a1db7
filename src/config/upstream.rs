//! An IMAP upstream: where it is, how to reach it over TLS, and the
//! bounds on waiting for it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, parsed, yes};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `host:port` of the IMAP server; the host is resolved at each connect.
    pub address: HostPort,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA certificates to verify the upstream with; the system's roots
    /// when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified in the certificate; the host of
    /// `address` when absent.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any upstream certificate. Only for tests and emergencies:
    /// anyone on the path can then read every password.
    #[serde(default)]
    pub dangerous_skip_verify: bool,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Bound on every upstream read and write.
    #[serde(
        default = "default_command_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// Concurrent connections to this upstream; 0 = unlimited.
    #[serde(default)]
    pub max_connections: usize,
    /// Tell the upstream the client's address with the IMAP ID command
    /// (x-originating-ip), which Dovecot honours from login_trusted_networks.
    #[serde(default = "yes")]
    pub forward_client_ip: bool,
    /// How often the background check connects to decide readiness.
    #[serde(
        default = "default_health_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub health_check_interval: Duration,
    /// Connections kept open ahead of logins: connected, through TLS and
    /// greeted, so a login starts at its LOGIN. Each is used by one login
    /// only. 0 = none.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// A pooled connection older than this is closed and replaced, well
    /// before the server's own pre-login timeout.
    #[serde(
        default = "default_pool_max_age",
        deserialize_with = "duration::deserialize"
    )]
    pub pool_max_age: Duration,
    /// Log in with OAuth2 tokens popgate obtains, for users who send a
    /// POP3 password.
    #[serde(default)]
    pub oauth2: Option<super::oauth2::OAuth2>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    #[default]
    None,
    /// Plain connect, then STARTTLS before anything else (port 143).
    Starttls,
    /// TLS from the first byte (port 993).
    Implicit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort(pub String);

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed::deserialize(d)
    }
}

impl HostPort {
    pub fn host(&self) -> &str {
        let host = self.0.rsplit_once(':').map_or(&*self.0, |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} needs a port, as in \"imap.example.org:143\""))?;
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(HostPort(s.to_string())),
            _ => Err(format!("{s:?} has an invalid port")),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_pool() -> usize {
    4
}
fn default_pool_max_age() -> Duration {
    Duration::from_secs(20)
}
