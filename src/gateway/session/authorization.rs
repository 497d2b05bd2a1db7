//! AUTHORIZATION state: CAPA, STLS, USER/PASS, the dispatch of the other
//! logins (in `mechanisms.rs`), and the upstream login they all lead to.

use std::time::Instant;

use tracing::info;

use super::gate::Admitted;
use super::{Fault, Pop3Session, Reply, State};
use crate::config::oauth2::Flow;
use crate::config::{ListenerTls, MasterLogin};
use crate::gateway::answer::{LoginFailure, Refusal};
use crate::gateway::login::{self, UpstreamProof};
use crate::metrics::{LoginResult, Mechanism};
use crate::oauth::broker::Refused;
use crate::pop3::response;
use crate::pop3::sasl;
use crate::pop3::Command;
use crate::secret::Secret;

/// How the user proved who they are.
pub(super) enum Proof {
    /// A password the upstream checks (USER/PASS, PLAIN, LOGIN).
    Password { authzid: String, password: Secret },
    /// A digest popgate checked against the credentials file (APOP,
    /// CRAM-MD5); the master user logs in on the user's behalf.
    Verified,
    /// A bearer token passed through (XOAUTH2, OAUTHBEARER).
    Token {
        mechanism: &'static str,
        response: Secret,
    },
}

/// A unique string for the APOP greeting and CRAM-MD5 challenges
/// (`<id.time.random@popgate>`).
pub(super) fn new_timestamp(session: u64) -> String {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut nonce);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "<{session}.{nanos}.{:016x}@popgate>",
        u64::from_be_bytes(nonce)
    )
}

impl Pop3Session {
    /// May passwords be sent on this connection now?
    fn auth_allowed(&self) -> bool {
        self.plaintext_ok || self.conn.is_tls()
    }

    /// The SASL mechanisms that can succeed on this connection now: never
    /// advertise one that cannot (curl picks the strongest offered).
    pub(super) fn mechanisms(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.auth_allowed() {
            // CRAM-MD5 shows no password, but an eavesdropper could crack
            // its digest offline: it needs TLS like the rest.
            if self.ctx.credentials.is_some() {
                out.push("CRAM-MD5");
            }
            out.extend(sasl::MECHANISMS);
            let upstream = self.ctx.default_backend();
            for m in ["XOAUTH2", "OAUTHBEARER"] {
                if upstream.offered(&format!("AUTH={m}")) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn stls_offered(&self) -> bool {
        self.origin.tls == ListenerTls::Starttls
            && !self.conn.is_tls()
            && matches!(self.state, State::Authorization { .. })
    }

    /// CAPA (RFC 2449): only what this connection, in this state, honours.
    pub(super) fn capabilities(&mut self) {
        let mut caps =
            String::from("CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if self.stls_offered() {
            caps.push_str("STLS\r\n");
        }
        if matches!(self.state, State::Authorization { .. }) {
            if self.auth_allowed() {
                caps.push_str("USER\r\n");
            }
            let mechanisms = self.mechanisms();
            if !mechanisms.is_empty() {
                caps.push_str("SASL");
                for m in mechanisms {
                    caps.push(' ');
                    caps.push_str(m);
                }
                caps.push_str("\r\n");
            }
        }
        // RFC 2449: the same values before and after login, as they do
        // not vary by user.
        let policy = &self.ctx.config.policy;
        if let Some(days) = policy.expire {
            caps.push_str(&format!("EXPIRE {days}\r\n"));
        }
        if !policy.login_delay.is_zero() {
            let secs = policy.login_delay.as_secs();
            caps.push_str(&format!("LOGIN-DELAY {secs}\r\n"));
        }
        caps.push_str(concat!(
            "IMPLEMENTATION popgate-",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        self.ok("Capability list follows");
        self.conn.out.extend_from_slice(caps.as_bytes());
        response::end_multiline(&mut self.conn.out);
    }

    /// STLS (RFC 2595). Input pipelined behind it would be read as if it
    /// had come through TLS, so it is refused instead.
    pub(super) async fn stls(&mut self) -> Result<Reply, Fault> {
        if !self.stls_offered() {
            return Ok(self.refuse(Refusal::StlsUnavailable));
        }
        if self.conn.has_pending_input() {
            return Ok(self.refuse(Refusal::StlsPipelined));
        }
        // A starttls listener always has a certificate (checked at start).
        let Some(acceptor) = self.origin.acceptor.clone() else {
            return Ok(self.refuse(Refusal::StlsUnavailable));
        };
        self.ok("Begin TLS negotiation now.");
        let listener = self.origin.listener.clone();
        let result = self.conn.start_tls(&acceptor).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.ctx
            .metrics
            .tls_handshakes
            .with_label_values(&[&*listener, label])
            .inc();
        result?;
        // Nothing learnt before TLS carries over (RFC 2595 section 4).
        self.state = State::Authorization { user: None };
        Ok(Reply::Ok)
    }

    pub(super) async fn authorization(&mut self, cmd: Command) -> Result<Reply, Fault> {
        // APOP and CRAM-MD5 need TLS too: their digests can be cracked.
        let needs_secret = matches!(
            &cmd,
            Command::User(_)
                | Command::Pass(_)
                | Command::Apop { .. }
                | Command::Auth {
                    mechanism: Some(_),
                    ..
                }
        );
        if needs_secret && !self.auth_allowed() {
            return Ok(self.refuse(Refusal::PlaintextDisallowed));
        }
        let State::Authorization { user } = &mut self.state else {
            return Ok(self.refuse(Refusal::AlreadyLoggedIn));
        };
        let reply = match cmd {
            Command::User(name) => {
                *user = Some(name);
                self.ok("")
            }
            Command::Pass(password) => match user.take() {
                Some(name) => {
                    let proof = Proof::Password {
                        authzid: String::new(),
                        password,
                    };
                    self.login(Mechanism::User, name, proof, None).await
                }
                None => self.refuse(Refusal::NoUserGiven),
            },
            Command::Apop { user, digest } => self.apop(user, digest).await,
            Command::Auth {
                mechanism: None, ..
            } => {
                let mechanisms = self.mechanisms();
                self.ok("");
                for m in mechanisms {
                    self.conn.out.extend_from_slice(m.as_bytes());
                    self.conn.out.extend_from_slice(b"\r\n");
                }
                response::end_multiline(&mut self.conn.out);
                Reply::Ok
            }
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                *user = None;
                self.authenticate(&mech, initial.as_deref()).await?
            }
            _ => self.refuse(Refusal::NotLoggedIn),
        };
        Ok(reply)
    }

    /// Logs in upstream for `user` (the POP3 login name, routed here),
    /// after the gate (`gate.rs`) unless the caller passed it already.
    pub(super) async fn login(
        &mut self,
        mechanism: Mechanism,
        user: String,
        proof: Proof,
        admitted: Option<Admitted>,
    ) -> Reply {
        let started = Instant::now();
        let admitted = match admitted {
            Some(a) => a,
            None => {
                let authzid = match &proof {
                    Proof::Password { authzid, .. } => authzid.as_str(),
                    _ => "",
                };
                match self.admit(mechanism, &user, authzid).await {
                    Ok(a) => a,
                    Err(reply) => return reply,
                }
            }
        };
        let ctx = self.ctx.clone();
        let route = ctx.router.route(&user);
        let backend = &ctx.backends[route.backend];
        let as_master;
        let mailbox_owner = match &proof {
            Proof::Password { authzid, .. } if !authzid.is_empty() => authzid.as_str(),
            _ => route.user.as_str(),
        };
        // On a route with a token broker the password never goes upstream:
        // it opens the user's tokens (refresh_token), or popgate checked it
        // against the credentials file (client_credentials).
        let broker = ctx.brokers.get(&backend.name).cloned();
        let brokered = match (&broker, &proof) {
            (Some(b), Proof::Password { password, .. }) => {
                let password = match b.flow() {
                    Flow::RefreshToken => Some(password),
                    Flow::ClientCredentials => {
                        if !self.password_matches(&user, password).await {
                            self.ctx.metrics.login(mechanism, LoginResult::AuthFailed);
                            return self.refuse_login(mechanism, &user, admitted).await;
                        }
                        None
                    }
                };
                Some(b.response(&route.user, password).await)
            }
            (Some(b), Proof::Verified) if b.flow() == Flow::ClientCredentials => {
                Some(b.response(&route.user, None).await)
            }
            // The sealed refresh token needs the password itself.
            (Some(_), Proof::Verified) => Some(Err(Refused::Unavailable)),
            _ => None,
        };
        let brokered = match brokered {
            None => None,
            Some(Ok(response)) => Some(response),
            Some(Err(Refused::Denied)) => {
                self.ctx.metrics.login(mechanism, LoginResult::AuthFailed);
                return self.refuse_login(mechanism, &user, admitted).await;
            }
            Some(Err(refused)) => {
                let failure = if refused == Refused::Reenrol {
                    LoginFailure::Reenrol
                } else {
                    LoginFailure::TokenUnavailable
                };
                self.ctx.metrics.login(mechanism, failure.result());
                let result = failure.result().as_str();
                let mechanism = mechanism.as_str();
                info!(user = %user, mechanism, route = %backend.name, result, "login refused");
                return self.refuse(Refusal::Login(failure));
            }
        };
        let credentials = match &proof {
            _ if brokered.is_some() => UpstreamProof::Token {
                mechanism: broker.as_ref().map_or("XOAUTH2", |b| b.mechanism()),
                response: brokered.as_ref().expect("checked"),
            },
            Proof::Password { authzid, password } => UpstreamProof::Password {
                authzid,
                user: &route.user,
                password,
            },
            Proof::Verified => {
                // The config check pairs a credentials file with a master user.
                let Some((master, password)) = ctx.master.as_ref() else {
                    return self.refuse(Refusal::Login(LoginFailure::Unavailable));
                };
                let auth = &ctx.config.auth;
                match auth.master_login {
                    MasterLogin::Authzid => UpstreamProof::Password {
                        authzid: &route.user,
                        user: master,
                        password,
                    },
                    MasterLogin::Separator => {
                        as_master = format!("{}{}{master}", route.user, auth.master_separator);
                        UpstreamProof::Password {
                            authzid: "",
                            user: &as_master,
                            password,
                        }
                    }
                }
            }
            Proof::Token {
                mechanism,
                response,
            } => UpstreamProof::Token {
                mechanism,
                response,
            },
        };
        let old_owner = crate::migration::Owner {
            login: &user,
            password: match &proof {
                Proof::Password { authzid, password } if authzid.is_empty() => Some(password),
                _ => None,
            },
        };
        let req = login::Request {
            old_owner,
            owner: admitted.user,
            owner_id: admitted.ids.as_ref().map(|i| i.user.as_str()),
            mailbox_owner,
            credentials,
            client: self.ends,
        };
        let outcome = login::open(&ctx, backend, &req).await;
        let result = outcome
            .as_ref()
            .map_or_else(|f| f.result(), |_| LoginResult::Ok);
        self.ctx.metrics.login(mechanism, result);
        match outcome {
            Ok(opened) => {
                self.waiting = None;
                self.succeeded_login(&admitted).await;
                info!(
                    user = %user,
                    mechanism = mechanism.as_str(),
                    route = %backend.name,
                    messages = opened.maildrop.len(),
                    login_ms = started.elapsed().as_millis() as u64,
                    "logged in"
                );
                self.user = Some(user);
                self.route = Some(backend.name.clone());
                self.state = State::Transaction(Box::new(opened));
                self.ok("Logged in.")
            }
            Err(LoginFailure::AuthFailed) => self.refuse_login(mechanism, &user, admitted).await,
            Err(failure) => {
                let result = failure.result().as_str();
                let mechanism = mechanism.as_str();
                info!(user = %user, mechanism, route = %backend.name, result, "login refused");
                self.refuse(Refusal::Login(failure))
            }
        }
    }

    /// The POP3 password checked against the credentials file, for routes
    /// whose application token opens every mailbox; off the async threads,
    /// as a hashed entry takes a while to check.
    async fn password_matches(&self, user: &str, password: &Secret) -> bool {
        let Some(creds) = self.ctx.credentials.clone() else {
            return false;
        };
        let (user, password) = (user.to_string(), password.clone());
        tokio::task::spawn_blocking(move || creds.verify(&user, &password))
            .await
            .unwrap_or(false)
    }

    /// A failed login counts against its network and user: the next
    /// attempts wait longer before they are checked (`gate.rs`). Unknown
    /// users get the same answer.
    pub(super) async fn refuse_login(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        admitted: Admitted,
    ) -> Reply {
        let mechanism_name = mechanism.as_str();
        info!(user = %user, mechanism = mechanism_name, result = "auth_failed", "login refused");
        if matches!(mechanism, Mechanism::Apop | Mechanism::CramMd5) {
            // Refused here, without asking the upstream.
            self.ctx.metrics.login(mechanism, LoginResult::AuthFailed);
        }
        self.failed_login(&admitted).await;
        self.refuse(Refusal::Login(LoginFailure::AuthFailed))
    }
}
