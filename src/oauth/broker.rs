//! The token broker of one route: turns a POP3 user and password into the
//! SASL response (XOAUTH2 or OAUTHBEARER) of a fresh access token.
//!
//! refresh_token: the user's sealed refresh token is opened with the POP3
//! password (which proves it); the access token is kept in memory and
//! reused until `refresh_margin` before it expires; one refresh per user at
//! a time (single flight: the others wait for it and take its token); a
//! rotated refresh token is sealed again and stored before it is used.
//!
//! client_credentials: one application token for every user, refreshed
//! the same way; the caller has checked the POP3 password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::endpoint::{lifetime, Client, Failure, Tokens};
use super::sealed::SealKey;
use crate::config::oauth2::{Flow, OAuth2, TokenMechanism};
use crate::metrics::{Metrics, RefreshResult};
use crate::secret::Secret;
use crate::state::tokens::TokenStore;

/// Why the broker has no token for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Wrong POP3 password, or no enrolment: a failed login.
    Denied,
    /// The authorization server refused the refresh token: enrol again.
    Reenrol,
    /// The authorization server or the store cannot be used now.
    Unavailable,
}

/// An access token held in memory.
struct Held {
    access: Secret,
    expires: Instant,
    /// When to replace it.
    renew: Instant,
}

#[derive(Default)]
struct Slot {
    held: Option<Held>,
}

pub(crate) struct Broker {
    route: String,
    flow: Flow,
    mechanism: TokenMechanism,
    login_as: String,
    margin: Duration,
    client: Client,
    store: Option<Arc<dyn TokenStore>>,
    metrics: Arc<Metrics>,
    /// Per user (refresh_token) or the one application slot; the async
    /// mutex is the single flight.
    slots: SyncMutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Argon2 runs at once: each takes 19 MiB and a core for a moment, and
    /// a crowd of logins (or guesses) must not take all memory.
    argon2: tokio::sync::Semaphore,
}

/// Argon2 derivations at once, per route.
const ARGON2_AT_ONCE: usize = 4;

/// The application token's slot name: no user name is empty.
const APP: &str = "";

impl Broker {
    pub(crate) fn new(
        route: &str,
        key: &str,
        cfg: &OAuth2,
        store: Option<Arc<dyn TokenStore>>,
        metrics: Arc<Metrics>,
    ) -> Result<Broker, String> {
        metrics.init_oauth(route, cfg.flow == Flow::RefreshToken);
        Ok(Broker {
            route: route.to_string(),
            flow: cfg.flow,
            mechanism: cfg.mechanism,
            login_as: cfg.login_as.clone(),
            margin: cfg.refresh_margin,
            client: Client::new(cfg, key)?,
            store,
            metrics,
            slots: SyncMutex::new(HashMap::new()),
            argon2: tokio::sync::Semaphore::new(ARGON2_AT_ONCE),
        })
    }

    pub(crate) fn mechanism(&self) -> &'static str {
        self.mechanism.sasl_name()
    }

    pub(crate) fn flow(&self) -> Flow {
        self.flow
    }

    fn slot(&self, name: &str) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(name.to_string()).or_default().clone()
    }

    /// The SASL response that logs `user` in upstream. `password` is the
    /// POP3 password (refresh_token), or `None` once the caller checked it
    /// (client_credentials).
    pub(crate) async fn response(
        &self,
        user: &str,
        password: Option<&Secret>,
    ) -> Result<Secret, Refused> {
        let access = match self.flow {
            Flow::RefreshToken => {
                let password = password.ok_or(Refused::Denied)?;
                self.user_token(&user.to_lowercase(), password).await?
            }
            Flow::ClientCredentials => self.app_token().await?,
        };
        Ok(self.sasl(user, &access))
    }

    fn sasl(&self, user: &str, access: &Secret) -> Secret {
        let user = self.login_as.replace("{user}", user);
        let user = user.as_str();
        let (head, tail): (&[u8], &[u8]) = match self.mechanism {
            TokenMechanism::Xoauth2 => (b"user=", b"\x01auth=Bearer "),
            TokenMechanism::Oauthbearer => (b"n,a=", b",\x01auth=Bearer "),
        };
        let mut raw = Vec::with_capacity(head.len() + user.len() + tail.len() + access.0.len() + 2);
        raw.extend_from_slice(head);
        raw.extend_from_slice(user.as_bytes());
        raw.extend_from_slice(tail);
        raw.extend_from_slice(access.expose());
        raw.extend_from_slice(b"\x01\x01");
        let raw = Secret(raw);
        Secret(B64.encode(raw.expose()).into_bytes())
    }

    async fn user_token(&self, user: &str, password: &Secret) -> Result<Secret, Refused> {
        let store = self.store.as_ref().ok_or(Refused::Unavailable)?;
        let load = |store: &Arc<dyn TokenStore>| {
            let store = store.clone();
            let (route, user) = (self.route.clone(), user.to_string());
            async move { store.load_token(&route, &user).await }
        };
        let record = match load(store).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Refused::Denied),
            Err(e) => {
                warn!(route = %self.route, error = %e, "state store failed reading a token");
                return Err(Refused::Unavailable);
            }
        };
        // The password proves itself by opening the record: Argon2 off the
        // async threads.
        let _turn = self
            .argon2
            .acquire()
            .await
            .map_err(|_| Refused::Unavailable)?;
        let (pw, rec) = (password.clone(), record);
        let (route, u) = (self.route.clone(), user.to_string());
        let key = tokio::task::spawn_blocking(move || {
            let key = SealKey::for_record(&pw, &rec).ok()?;
            key.open(&route, &u, &rec).ok()?;
            Some(key)
        })
        .await
        .map_err(|_| Refused::Unavailable)?
        .ok_or(Refused::Denied)?;

        let slot = self.slot(user);
        let mut slot = slot.lock().await;
        if let Some(held) = slot.held.as_ref().filter(|h| Instant::now() < h.renew) {
            return Ok(held.access.clone());
        }
        // Read again under the lock: another session may have rotated it.
        let record = match load(store).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Refused::Denied),
            Err(_) => return Err(Refused::Unavailable),
        };
        let refresh = key
            .open(&self.route, user, &record)
            .map_err(|_| Refused::Denied)?;
        let tokens = self.ask(self.client.refresh(&refresh).await, Some(user))?;
        if let Some(rotated) = &tokens.refresh {
            let sealed = key
                .seal(&self.route, user, rotated)
                .map_err(|_| Refused::Unavailable)?;
            if let Err(e) = store.save_token(&self.route, user, &sealed).await {
                // The old refresh token may be dead already; the new one is
                // lost. The access token still serves this login.
                warn!(route = %self.route, user = %user, error = %e,
                      "state store failed saving a rotated refresh token");
            }
        }
        Ok(self.hold(&mut slot, tokens))
    }

    async fn app_token(&self) -> Result<Secret, Refused> {
        let slot = self.slot(APP);
        let mut slot = slot.lock().await;
        if let Some(held) = slot.held.as_ref().filter(|h| Instant::now() < h.renew) {
            return Ok(held.access.clone());
        }
        let tokens = self.ask(self.client.client_credentials().await, None)?;
        Ok(self.hold(&mut slot, tokens))
    }

    /// Counts and logs the outcome of a token request.
    fn ask(&self, r: Result<Tokens, Failure>, user: Option<&str>) -> Result<Tokens, Refused> {
        let user = user.unwrap_or("-");
        match r {
            Ok(t) => {
                self.metrics.oauth_refreshed(&self.route, RefreshResult::Ok);
                Ok(t)
            }
            Err(Failure::Refused(code)) => {
                self.metrics
                    .oauth_refreshed(&self.route, RefreshResult::Rejected);
                warn!(route = %self.route, user = %user, error = %code,
                      "the authorization server refused the refresh token; the user must enrol again");
                Err(Refused::Reenrol)
            }
            Err(Failure::Unavailable(reason)) => {
                self.metrics
                    .oauth_refreshed(&self.route, RefreshResult::Unavailable);
                warn!(route = %self.route, user = %user, reason = %reason,
                      "no access token from the authorization server");
                Err(Refused::Unavailable)
            }
        }
    }

    fn hold(&self, slot: &mut Slot, tokens: Tokens) -> Secret {
        let now = Instant::now();
        let life = lifetime(tokens.expires_in);
        let margin = self.margin.min(life / 2);
        info!(route = %self.route, expires_in_s = life.as_secs(), "access token obtained");
        slot.held = Some(Held {
            access: tokens.access.clone(),
            expires: now + life,
            renew: now + life - margin,
        });
        tokens.access
    }

    /// Seconds until the access token renewed longest ago expires; `None`
    /// while none is held.
    pub(crate) fn oldest_expiry(&self) -> Option<f64> {
        let slots: Vec<_> = {
            let s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            s.values().cloned().collect()
        };
        let now = Instant::now();
        slots
            .iter()
            .filter_map(|s| {
                s.try_lock()
                    .ok()
                    .and_then(|s| s.held.as_ref().map(|h| h.expires))
            })
            .min()
            .map(|e| {
                if e >= now {
                    e.duration_since(now).as_secs_f64()
                } else {
                    -now.duration_since(e).as_secs_f64()
                }
            })
    }

    pub(crate) fn route(&self) -> &str {
        &self.route
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn TokenStore>> {
        self.store.as_ref()
    }
}

/// Keeps the broker gauges current: enrolled users and the oldest access
/// token's remaining life.
pub(crate) async fn watch(brokers: Vec<Arc<Broker>>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        for b in &brokers {
            match b.oldest_expiry() {
                Some(s) => metrics
                    .oauth_token_expiry
                    .with_label_values(&[b.route()])
                    .set(s),
                None => {
                    let _ = metrics.oauth_token_expiry.remove_label_values(&[b.route()]);
                }
            }
            if let (Flow::RefreshToken, Some(store)) = (b.flow(), b.store()) {
                if let Ok(n) = store.count_tokens(b.route()).await {
                    metrics
                        .oauth_enrolled
                        .with_label_values(&[b.route()])
                        .set(n as i64);
                }
            }
        }
    }
}
