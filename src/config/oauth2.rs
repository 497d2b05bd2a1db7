//! `upstream.oauth2`: the token broker of a route. popgate holds the OAuth2
//! tokens and logs in upstream with XOAUTH2 or OAUTHBEARER for users who
//! send a POP3 password.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, parsed};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// The authorization server's token endpoint.
    pub token_url: EndpointUrl,
    /// The device authorization endpoint (RFC 8628), for `popgate oauth
    /// enroll`.
    #[serde(default)]
    pub device_authorization_url: Option<EndpointUrl>,
    pub client_id: String,
    /// The client secret, one line; a public client has none.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Space-separated scopes asked for.
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub mechanism: TokenMechanism,
    pub flow: Flow,
    /// The user named in the XOAUTH2/OAUTHBEARER response; `{user}` is the
    /// upstream user. A Dovecot that takes the application token through
    /// a master passdb wants `{user}*APP`.
    #[serde(default = "default_login_as")]
    pub login_as: String,
    /// PEM CA certificates for the endpoints; the system's roots when
    /// absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Bound on each request to the authorization server.
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// An access token is replaced this long before it expires (at most
    /// half its lifetime).
    #[serde(
        default = "default_refresh_margin",
        deserialize_with = "duration::deserialize"
    )]
    pub refresh_margin: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMechanism {
    #[default]
    Xoauth2,
    Oauthbearer,
}

impl TokenMechanism {
    pub fn sasl_name(self) -> &'static str {
        match self {
            TokenMechanism::Xoauth2 => "XOAUTH2",
            TokenMechanism::Oauthbearer => "OAUTHBEARER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Each user enrols once; popgate keeps their refresh token, sealed
    /// with their POP3 password.
    RefreshToken,
    /// One application token for every mailbox; popgate checks the POP3
    /// password against the credentials file.
    ClientCredentials,
}

/// An `https://` URL, or `http://` to a loopback address (nothing else
/// may carry a client secret in the clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, from the first `/`.
    pub path: String,
}

impl<'de> Deserialize<'de> for EndpointUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed::deserialize(d)
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

impl std::str::FromStr for EndpointUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{s:?} must start with https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("{s:?}: credentials belong in client_secret_file"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?} has a bad host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{s:?} has an invalid port"))?,
            None if tls => 443,
            None => 80,
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(format!(
                "{s:?}: http:// only to a loopback address; use https://"
            ));
        }
        Ok(EndpointUrl {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

fn default_login_as() -> String {
    "{user}".to_string()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_refresh_margin() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::EndpointUrl;

    #[test]
    fn endpoint_urls() {
        let u: EndpointUrl = "https://login.example.net/oauth2/token".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "login.example.net", 443)
        );
        assert_eq!(u.path, "/oauth2/token");
        let u: EndpointUrl = "http://127.0.0.1:8080/token".parse().unwrap();
        assert_eq!((u.tls, u.port), (false, 8080));
        assert!("http://login.example.net/token"
            .parse::<EndpointUrl>()
            .is_err());
        assert!("https://u:p@login.example.net/"
            .parse::<EndpointUrl>()
            .is_err());
        assert!("ftp://x/".parse::<EndpointUrl>().is_err());
    }
}
