//! The OAuth2 grants popgate uses, and what their answers mean: refresh
//! (RFC 6749 section 6), client credentials (section 4.4) and the device
//! authorization grant (RFC 8628). Errors carry the server's error code
//! when it is a plain word, never a token or the body.

use std::time::Duration;

use serde::Deserialize;

use super::http::{form, Endpoint, HttpError, Reply};
use crate::config::oauth2::OAuth2;
use crate::secret::Secret;

pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A fresh access token, and the refresh token that came with it.
pub(crate) struct Tokens {
    pub(crate) access: Secret,
    /// Seconds; absent when the server does not say.
    pub(crate) expires_in: Option<u64>,
    /// A rotated refresh token, to be stored in place of the old one.
    pub(crate) refresh: Option<Secret>,
}

/// Why no token came.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The grant was refused (`invalid_grant`): a refresh token revoked or
    /// expired, a device code expired or denied.
    #[error("the authorization server refused the grant ({0})")]
    Refused(String),
    #[error("the authorization server cannot be used: {0}")]
    Unavailable(String),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        Failure::Unavailable(e.to_string())
    }
}

/// What a poll of the device grant found.
pub(crate) enum Poll {
    Done(Tokens),
    Pending,
    SlowDown,
}

/// What starting the device grant gave: what to show the user.
pub(crate) struct DeviceStart {
    pub(crate) device_code: Secret,
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    pub(crate) verification_uri_complete: Option<String>,
    pub(crate) expires_in: u64,
    pub(crate) interval: u64,
}

pub(crate) struct Client {
    token: Endpoint,
    device: Option<Endpoint>,
    client_id: String,
    secret: Option<Secret>,
    scope: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct DeviceBody {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Option<u64>,
    interval: Option<u64>,
}

impl Client {
    /// `key` names the config section in errors.
    pub(crate) fn new(cfg: &OAuth2, key: &str) -> Result<Client, String> {
        let tls = crate::net::tls::client_config(cfg.ca_file.as_deref(), false)
            .map_err(|e| format!("{key}.ca_file: {e}"))?;
        let secret = match &cfg.client_secret_file {
            Some(path) => Some(
                crate::files::master_password(path)
                    .map_err(|e| format!("{key}.client_secret_file: {e}"))?,
            ),
            None => None,
        };
        let endpoint = |url: &crate::config::oauth2::EndpointUrl| {
            Endpoint::new(url.clone(), tls.clone(), cfg.timeout)
        };
        Ok(Client {
            token: endpoint(&cfg.token_url),
            device: cfg.device_authorization_url.as_ref().map(endpoint),
            client_id: cfg.client_id.clone(),
            secret,
            scope: cfg.scope.clone(),
        })
    }

    /// The client's own fields, then `extra`.
    fn form(&self, extra: &[(&str, &[u8])]) -> Secret {
        let mut pairs: Vec<(&str, &[u8])> = vec![("client_id", self.client_id.as_bytes())];
        if let Some(s) = &self.secret {
            pairs.push(("client_secret", s.expose()));
        }
        pairs.extend_from_slice(extra);
        form(&pairs)
    }

    pub(crate) async fn refresh(&self, refresh_token: &Secret) -> Result<Tokens, Failure> {
        let f = self.form(&[
            ("grant_type", b"refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ]);
        tokens(self.token.post_form(&f).await?)
    }

    pub(crate) async fn client_credentials(&self) -> Result<Tokens, Failure> {
        let f = self.form(&[
            ("grant_type", b"client_credentials"),
            ("scope", self.scope.as_bytes()),
        ]);
        tokens(self.token.post_form(&f).await?)
    }

    pub(crate) async fn device_start(&self) -> Result<DeviceStart, Failure> {
        let Some(device) = &self.device else {
            return Err(Failure::Unavailable(
                "no device_authorization_url configured".into(),
            ));
        };
        let f = self.form(&[("scope", self.scope.as_bytes())]);
        let reply = device.post_form(&f).await?;
        if reply.status != 200 {
            return Err(refusal(&reply));
        }
        let body: DeviceBody = serde_json::from_slice(reply.body.expose()).map_err(|_| {
            Failure::Unavailable("the device authorization answer is not usable".into())
        })?;
        Ok(DeviceStart {
            device_code: Secret(body.device_code.into_bytes()),
            user_code: body.user_code,
            verification_uri: body.verification_uri,
            verification_uri_complete: body.verification_uri_complete,
            expires_in: body.expires_in.unwrap_or(600),
            interval: body.interval.unwrap_or(5).max(1),
        })
    }

    pub(crate) async fn device_poll(&self, device_code: &Secret) -> Result<Poll, Failure> {
        let f = self.form(&[
            ("grant_type", DEVICE_GRANT.as_bytes()),
            ("device_code", device_code.expose()),
        ]);
        let reply = self.token.post_form(&f).await?;
        match tokens(reply) {
            Ok(t) => Ok(Poll::Done(t)),
            Err(Failure::Refused(code)) if code == "authorization_pending" => Ok(Poll::Pending),
            Err(Failure::Refused(code)) if code == "slow_down" => Ok(Poll::SlowDown),
            Err(e) => Err(e),
        }
    }
}

/// A token answer: 200 with an access token, or an error.
fn tokens(reply: Reply) -> Result<Tokens, Failure> {
    if reply.status != 200 {
        return Err(refusal(&reply));
    }
    let garbage = || Failure::Unavailable("the token answer is not usable".into());
    let body: TokenBody = serde_json::from_slice(reply.body.expose()).map_err(|_| garbage())?;
    let access = body
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(garbage)?;
    // Some servers send expires_in as a string.
    let expires_in = match body.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(Tokens {
        access: Secret(access.into_bytes()),
        expires_in,
        refresh: body
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(|t| Secret(t.into_bytes())),
    })
}

/// An error answer. 400 and 401 with an OAuth2 error code are the server's
/// word on the grant; `invalid_grant` means it refuses it for good, other
/// codes (a wrong client secret, an unknown scope) are popgate's setup and
/// as unusable as a server that is down.
fn refusal(reply: &Reply) -> Failure {
    let code = serde_json::from_slice::<TokenBody>(reply.body.expose())
        .ok()
        .and_then(|b| b.error)
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    match (reply.status, code) {
        (400 | 401, Some(code))
            if matches!(
                code.as_str(),
                "invalid_grant"
                    | "authorization_pending"
                    | "slow_down"
                    | "access_denied"
                    | "expired_token"
            ) =>
        {
            Failure::Refused(code)
        }
        (status, Some(code)) => Failure::Unavailable(format!("HTTP {status}, error {code}")),
        (status, None) => Failure::Unavailable(format!("HTTP {status}")),
    }
}

/// The `Duration` of `expires_in`, with a floor: a server that says 0 or
/// nothing gets its token used once.
pub(crate) fn lifetime(expires_in: Option<u64>) -> Duration {
    Duration::from_secs(expires_in.unwrap_or(0))
}
