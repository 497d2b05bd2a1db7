//! `popgate oauth enroll`: the device authorization grant (RFC 8628) for
//! one user of one route. It prints where to go and the code to enter,
//! polls the token endpoint until the user has signed in (or the code
//! expires), and stores the refresh token sealed with the POP3 password
//! the user will log in with. Nothing secret is printed.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::{Client, Failure, Poll};
use super::sealed::SealKey;
use crate::config::oauth2::Flow;
use crate::config::Config;
use crate::secret::Secret;
use crate::state::tokens::TokenStore;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The command line or config does not allow an enrolment.
    #[error("{0}")]
    Config(String),
    /// The authorization server refused or could not be used.
    #[error("{0}")]
    Server(String),
    #[error("the state store failed: {0}")]
    Store(String),
}

/// The route's token endpoint client, checked for the device grant.
pub fn client(config: &Config, route: &str) -> Result<ClientHandle, EnrollError> {
    let up = route_upstream(config, route)
        .ok_or_else(|| EnrollError::Config(format!("--route {route:?}: no such route")))?;
    let key = if route == crate::config::DEFAULT_ROUTE {
        "upstream".to_string()
    } else {
        format!("upstreams.{route}")
    };
    let Some(o) = &up.oauth2 else {
        return Err(EnrollError::Config(format!("{key}.oauth2: not configured")));
    };
    if o.flow != Flow::RefreshToken {
        return Err(EnrollError::Config(format!(
            "{key}.oauth2.flow: users enrol only with flow refresh_token"
        )));
    }
    if o.device_authorization_url.is_none() {
        return Err(EnrollError::Config(format!(
            "{key}.oauth2.device_authorization_url: needed to enrol users"
        )));
    }
    let client = Client::new(o, &format!("{key}.oauth2")).map_err(EnrollError::Config)?;
    Ok(ClientHandle(client))
}

fn route_upstream<'a>(config: &'a Config, route: &str) -> Option<&'a crate::config::Upstream> {
    if route == crate::config::DEFAULT_ROUTE {
        Some(&config.upstream)
    } else {
        config.upstreams.get(route)
    }
}

/// A checked client (opaque outside this crate).
pub struct ClientHandle(Client);

/// Runs the device grant and stores the sealed refresh token. `out` gets
/// what the user must see.
pub async fn enroll(
    client: &ClientHandle,
    store: Arc<dyn TokenStore>,
    route: &str,
    user: &str,
    password: Secret,
    out: &mut (dyn Write + Send),
) -> Result<(), EnrollError> {
    let client = &client.0;
    let user = user.to_lowercase();
    let server = |e: Failure| EnrollError::Server(e.to_string());
    let start = client.device_start().await.map_err(server)?;
    let shown = start
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&start.verification_uri);
    let _ = writeln!(
        out,
        "To enrol {user} on route {route}, open {shown}\nand enter the code {}\n(waiting up to {} s)",
        start.user_code, start.expires_in
    );
    let _ = out.flush();
    // Argon2 while the user signs in.
    let key = tokio::task::spawn_blocking(move || SealKey::create(&password))
        .await
        .map_err(|e| EnrollError::Store(e.to_string()))?
        .map_err(|e| EnrollError::Store(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(start.expires_in);
    let mut interval = Duration::from_secs(start.interval);
    let tokens = loop {
        if Instant::now() >= deadline {
            return Err(EnrollError::Server(
                "the code expired before the user signed in; run the command again".into(),
            ));
        }
        tokio::time::sleep(interval).await;
        match client.device_poll(&start.device_code).await {
            Ok(Poll::Done(t)) => break t,
            Ok(Poll::Pending) => {}
            Ok(Poll::SlowDown) => interval += Duration::from_secs(5),
            // A server that is briefly unreachable: keep polling.
            Err(Failure::Unavailable(_)) => {}
            Err(e) => return Err(server(e)),
        }
    };
    let Some(refresh) = tokens.refresh else {
        return Err(EnrollError::Server(
            "the authorization server gave no refresh token: ask for the offline_access scope (Microsoft) or its equivalent".into(),
        ));
    };
    let sealed = key
        .seal(route, &user, &refresh)
        .map_err(|e| EnrollError::Store(e.to_string()))?;
    store
        .save_token(route, &user, &sealed)
        .await
        .map_err(|e| EnrollError::Store(e.to_string()))?;
    let _ = writeln!(out, "enrolled {user} on route {route}");
    Ok(())
}
