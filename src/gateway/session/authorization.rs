//! AUTHORIZATION state: CAPA, STLS, USER/PASS, the dispatch of the other
//! logins (in `mechanisms.rs`), and the upstream login they all lead to.

use std::time::Instant;

use tracing::info;

use super::{Fault, Pop3Session, Reply, State};
use crate::config::{ListenerTls, MasterLogin};
use crate::gateway::answer::{LoginFailure, Refusal};
use crate::gateway::login::{self, UpstreamProof};
use crate::metrics::{LoginResult, Mechanism, ThrottleKind};
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
        if self.ctx.credentials.is_some() {
            out.push("CRAM-MD5"); // reveals no password, so fine without TLS
        }
        if self.auth_allowed() {
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
        // APOP and CRAM-MD5 send no password, so they need no TLS.
        let needs_secret = match &cmd {
            Command::User(_) | Command::Pass(_) => true,
            Command::Auth {
                mechanism: Some(m), ..
            } => m != "CRAM-MD5",
            _ => false,
        };
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
                    self.login(Mechanism::User, name, proof).await
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

    /// Logs in upstream for `user` (the POP3 login name, routed here).
    pub(super) async fn login(
        &mut self,
        mechanism: Mechanism,
        user: String,
        proof: Proof,
    ) -> Reply {
        let started = Instant::now();
        let ctx = self.ctx.clone();
        let route = ctx.router.route(&user);
        let backend = &ctx.backends[route.backend];
        let as_master;
        let (owner, credentials) = match &proof {
            Proof::Password { authzid, password } => {
                let owner = if authzid.is_empty() {
                    &route.user
                } else {
                    authzid
                };
                let creds = UpstreamProof::Password {
                    authzid,
                    user: &route.user,
                    password,
                };
                (owner.as_str(), creds)
            }
            Proof::Verified => {
                // The config check pairs a credentials file with a master user.
                let Some((master, password)) = ctx.master.as_ref() else {
                    return self.refuse(Refusal::Login(LoginFailure::Unavailable));
                };
                let auth = &ctx.config.auth;
                let creds = match auth.master_login {
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
                };
                (route.user.as_str(), creds)
            }
            Proof::Token {
                mechanism,
                response,
            } => (
                route.user.as_str(),
                UpstreamProof::Token {
                    mechanism,
                    response,
                },
            ),
        };
        let req = login::Request {
            owner,
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
                let limits = &self.ctx.limits;
                limits.ip_penalty.succeeded(&self.ends.client.ip());
                limits.user_penalty.succeeded(&user.to_lowercase());
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
            Err(LoginFailure::AuthFailed) => self.refuse_login(mechanism, &user, started).await,
            Err(failure) => {
                let result = failure.result().as_str();
                let mechanism = mechanism.as_str();
                info!(user = %user, mechanism, route = %backend.name, result, "login refused");
                self.refuse(Refusal::Login(failure))
            }
        }
    }

    /// A failed login answers late, the later the more failures there were
    /// recently from this address or for this user; a correct login is
    /// never held up. Unknown users get the same answer.
    pub(super) async fn refuse_login(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        started: Instant,
    ) -> Reply {
        let mechanism_name = mechanism.as_str();
        info!(user = %user, mechanism = mechanism_name, result = "auth_failed", "login refused");
        let m = &self.ctx.metrics;
        if matches!(mechanism, Mechanism::Apop | Mechanism::CramMd5) {
            // Refused here, without asking the upstream.
            m.login(mechanism, LoginResult::AuthFailed);
        }
        let limits = &self.ctx.limits;
        let (ip, user_key, now) = (self.ends.client.ip(), user.to_lowercase(), Instant::now());
        limits.ip_penalty.failed(ip, now);
        limits.user_penalty.failed(user_key.clone(), now);
        let by_ip = limits.ip_penalty.delay(&ip, now);
        let by_user = limits.user_penalty.delay(&user_key, now);
        let kind = if by_ip >= by_user {
            ThrottleKind::Ip
        } else {
            ThrottleKind::User
        };
        let delay = by_ip.max(by_user).saturating_sub(started.elapsed());
        if !delay.is_zero() {
            m.throttled(kind);
            tokio::time::sleep(delay).await;
        }
        self.auth_failures += 1;
        self.refuse(Refusal::Login(LoginFailure::AuthFailed))
    }
}
