//! The YAML configuration: the schema and its defaults. Unknown keys are
//! errors, and every error names the key and the line: serde_yaml reports
//! both for a value that fails to parse (`parsed`, `duration`), and `check`
//! locates the key of each range and cross-field check in the text.

mod check;
pub mod duration;
mod locate;
mod mailboxes;
pub mod migration;
pub mod oauth2;
pub mod parsed;
mod policy;
mod state;
mod upstream;

pub use check::{ConfigError, ConfigErrorKind, FOLDER_SUFFIX_LEN};
pub use locate::{KeyPath, Segment};
pub use mailboxes::Mailboxes;
pub use policy::{Delete, DeleteAction, Policy, Workaround};
pub use state::{OnUnavailable, RedisState, State};
pub use upstream::{HostPort, Upstream, UpstreamTls};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::pop3::uidl::UidlTemplate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listeners: Listeners,
    /// The default backend, route name `default`.
    pub upstream: Upstream,
    /// More backends, by route name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub routing: Routing,
    /// The folder, or folders, that make up the maildrop.
    #[serde(default)]
    pub mailbox: Mailboxes,
    #[serde(default)]
    pub uidl_format: UidlTemplate,
    /// What QUIT does with the messages marked with DELE.
    #[serde(default)]
    pub delete: Delete,
    /// Byte-level fixes for old clients, all off by default.
    #[serde(default)]
    pub client_workarounds: Vec<Workaround>,
    /// RFC 2449's EXPIRE and LOGIN-DELAY.
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub session: Session,
    #[serde(default)]
    pub shutdown: Shutdown,
    /// Certificate and key for TLS listeners.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub limits: Limits,
    /// The HTTP sidecar; absent means none.
    #[serde(default)]
    pub metrics: Option<MetricsHttp>,
    #[serde(default)]
    pub log: Log,
    /// The UIDL memory; absent means UIDLs come from the template alone.
    #[serde(default)]
    pub state: Option<State>,
    /// The old POP3 server whose UIDLs a mailbox keeps; needs `state`.
    #[serde(default)]
    pub migration: Option<migration::Migration>,
}

#[derive(Debug, Clone)]
pub struct Listeners(pub Vec<Listener>);

impl<'de> Deserialize<'de> for Listeners {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Listeners;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of listeners")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Listeners, A::Error> {
                let mut v: Vec<Listener> = Vec::new();
                while let Some(l) = seq.next_element::<Listener>()? {
                    if l.address.port() != 0 && v.iter().any(|o| o.address == l.address) {
                        return Err(serde::de::Error::custom(format!(
                            "address {} is listed twice",
                            l.address
                        )));
                    }
                    v.push(l);
                }
                if v.is_empty() {
                    return Err(serde::de::Error::custom(
                        "at least one listener is required",
                    ));
                }
                Ok(Listeners(v))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port`; port 0 picks a free port (the log line tells which).
    pub address: SocketAddr,
    /// The `listener` label in metrics; `pop3-<port>` by default. Give
    /// listeners that share a port different names.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tls: ListenerTls,
    /// Expect a PROXY protocol (v1 or v2) header from a load balancer.
    /// Connections from outside `proxy_trusted` are then refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Networks of the load balancers allowed to send PROXY headers.
    #[serde(default, deserialize_with = "parsed::deserialize_list")]
    pub proxy_trusted: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// Plain POP3, no STLS offered.
    #[default]
    None,
    /// Plain POP3 that offers STLS (RFC 2595); port 110 style.
    Starttls,
    /// TLS from the first byte (POP3S); port 995 style.
    Implicit,
}

impl ListenerTls {
    pub fn label(self) -> &'static str {
        match self {
            ListenerTls::None => "none",
            ListenerTls::Starttls => "starttls",
            ListenerTls::Implicit => "implicit",
        }
    }
}

/// The server certificate for TLS listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for changes.
    #[serde(
        default = "default_reload_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub reload_interval: Duration,
}

/// How a login name picks its backend.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Logins `user@DOMAIN` go to the named backend.
    pub domains: BTreeMap<String, DomainRoute>,
    /// The SDPS forms `user@NAME` and `user+NAME` pick the backend called
    /// NAME and log in upstream as `user`.
    pub sdps: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRoute {
    /// `default` or a name from `upstreams`.
    pub upstream: String,
    /// Log in upstream as `user` instead of `user@DOMAIN`.
    #[serde(default)]
    pub strip_domain: bool,
}

/// Abuse limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent connections from one client address; 0 = unlimited.
    pub connections_per_ip: usize,
    /// Concurrent logged-in sessions of one user; 0 = unlimited.
    pub sessions_per_user: usize,
    /// Failed logins one connection may make before it is closed.
    pub auth_failures_per_connection: u32,
    /// Longest wait a login earns before its credentials are checked; each
    /// recent failure of the same client network or user doubles it (1 s,
    /// 2 s, 4 s ...). 0s disables.
    #[serde(deserialize_with = "duration::deserialize")]
    pub auth_penalty_max: Duration,
    /// Networks, users and known addresses remembered for the penalty, at
    /// most, per table (each entry a fixed few dozen bytes).
    pub auth_penalty_memory: usize,
    /// IPv6 clients are penalised per prefix of this length (a host has a
    /// whole /64).
    pub auth_penalty_ipv6_prefix: u8,
    /// Login attempts one user (or network) may have waiting out the
    /// penalty; more are refused at once.
    pub auth_attempts_queued_per_user: u32,
    /// Time a client has from connecting to logging in.
    #[serde(deserialize_with = "duration::deserialize")]
    pub login_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_ip: 100,
            sessions_per_user: 10,
            auth_failures_per_connection: 3,
            auth_penalty_max: Duration::from_secs(15),
            auth_penalty_memory: 100_000,
            auth_penalty_ipv6_prefix: 64,
            auth_attempts_queued_per_user: 4,
            login_timeout: Duration::from_secs(180),
        }
    }
}

/// How clients may log in: where passwords may go without TLS, and the
/// credentials and master user behind APOP and CRAM-MD5.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Client networks trusted with plaintext passwords on an unencrypted
    /// connection; everyone else must use STLS or POP3S first.
    #[serde(deserialize_with = "parsed::deserialize_list")]
    pub plaintext_networks: Vec<ipnet::IpNet>,
    /// `user:secret` lines; enables APOP and CRAM-MD5, which popgate
    /// verifies itself before logging in upstream as `master_user`.
    pub credentials_file: Option<PathBuf>,
    /// The upstream master user that logs in on behalf of APOP and
    /// CRAM-MD5 users.
    pub master_user: Option<String>,
    /// File whose first line is the master user's password.
    pub master_password_file: Option<PathBuf>,
    /// How the master user names the real user upstream.
    pub master_login: MasterLogin,
    /// For `master_login: separator`: `user<separator>master` with LOGIN.
    pub master_separator: String,
    /// How often the credentials file is checked for changes.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reload_interval: Duration,
    /// Let clients name an upstream master user: an AUTH PLAIN authzid
    /// other than the login name, or a name holding `master_separator`.
    /// Off, such logins are refused before anything goes upstream.
    pub client_master_login: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterLogin {
    /// AUTHENTICATE PLAIN with authzid = user, authcid = master.
    #[default]
    Authzid,
    /// Dovecot style: LOGIN "user*master" with the master password.
    Separator,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            plaintext_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            credentials_file: None,
            master_user: None,
            master_password_file: None,
            master_login: MasterLogin::Authzid,
            master_separator: "*".into(),
            reload_interval: Duration::from_secs(10),
            client_master_login: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsHttp {
    /// `ip:port` of the sidecar serving /metrics, /healthz and /readyz.
    pub address: SocketAddr,
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub header_read_timeout: Duration,
    /// Connections in all. When they are taken, a newcomer still gets in
    /// and the oldest connection is closed (an idle keep-alive at once), so
    /// idle clients cannot shut out the probes.
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    /// Connections from one client address; more are refused.
    #[serde(default = "default_http_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Session {
    /// RFC 1939's autologout timer: at least 10 minutes.
    #[serde(deserialize_with = "duration::deserialize")]
    pub idle_timeout: Duration,
    /// Longest command line accepted, CRLF included. RFC 2449 allows 255
    /// octets for commands; SASL responses (OAuth tokens) need more.
    pub max_line_length: usize,
    /// Concurrent POP3 connections per popgate process.
    pub max_connections: usize,
    /// Set `\Seen` at QUIT on messages retrieved with RETR, as Dovecot's POP3.
    pub mark_seen: bool,
    /// Allow one session per user at a time (RFC 1939's exclusive lock);
    /// a second login is refused with the `[IN-USE]` response code.
    pub exclusive: bool,
    /// Only the newest this many messages (by UID) make up the maildrop;
    /// the older ones are invisible to POP3 and left alone. 0 = all.
    pub max_messages: usize,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            idle_timeout: Duration::from_secs(600),
            max_line_length: 8192,
            max_connections: 10_000,
            mark_seen: true,
            exclusive: false,
            max_messages: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long running sessions may go on after SIGTERM; then they are
    /// closed and their deletions dropped. Below Kubernetes' 30 s grace.
    #[serde(deserialize_with = "duration::deserialize")]
    pub drain_timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            drain_timeout: Duration::from_secs(25),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `popgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The route name of the top-level `upstream`.
pub const DEFAULT_ROUTE: &str = "default";

fn yes() -> bool {
    true
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_http_connections() -> usize {
    64
}
fn default_http_connections_per_ip() -> usize {
    8
}
