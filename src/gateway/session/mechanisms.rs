//! The login exchanges beyond USER/PASS: SASL (RFC 5034) with PLAIN and
//! LOGIN, CRAM-MD5 and APOP checked against the credentials file, and
//! bearer tokens passed through.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::authorization::{new_timestamp, Proof};
use super::{Fault, Pop3Session, Reply};
use crate::gateway::answer::Refusal;
use crate::metrics::Mechanism;
use crate::pop3::response;
use crate::pop3::sasl::{self, Exchange, SaslError, Step};
use crate::pop3::{digest, Line};
use crate::secret::Secret;

impl Pop3Session {
    /// Runs a SASL exchange (RFC 5034), then the upstream login.
    pub(super) async fn authenticate(
        &mut self,
        mech: &str,
        initial: Option<&str>,
    ) -> Result<Reply, Fault> {
        if !self.mechanisms().contains(&mech) {
            return Ok(self.refuse(Refusal::UnsupportedMechanism));
        }
        match mech {
            "CRAM-MD5" => return self.cram_md5(initial).await,
            "XOAUTH2" | "OAUTHBEARER" => return self.bearer(mech, initial).await,
            _ => {}
        }
        let (mut exchange, mut step) = match Exchange::start(mech, initial) {
            Ok(started) => started,
            Err(e) => return Ok(self.refuse(Refusal::SaslStart(e))),
        };
        loop {
            match step {
                Step::Done(c) => {
                    let mech = if mech == "PLAIN" {
                        Mechanism::Plain
                    } else {
                        Mechanism::Login
                    };
                    let proof = Proof::Password {
                        authzid: c.authzid,
                        password: c.password,
                    };
                    return Ok(self.login(mech, c.user, proof, None).await);
                }
                Step::Challenge(challenge) => {
                    response::continuation(&mut self.conn.out, challenge);
                    let line = match self.conn.next_line().await? {
                        Line::Complete(line) => Secret(line.to_vec()),
                        Line::TooLong => return Ok(self.refuse(Refusal::AuthDataTooLong)),
                    };
                    step = match exchange.step(line.expose()) {
                        Ok(s) => s,
                        Err(e) => return Ok(self.refuse(Refusal::Sasl(e))),
                    };
                }
            }
        }
    }

    /// Reads one SASL response line after a challenge; `None` if the
    /// exchange ended (the refusal is already queued).
    async fn sasl_response(&mut self, challenge: &str) -> Result<Option<Secret>, Fault> {
        response::continuation(&mut self.conn.out, challenge);
        match self.conn.next_line().await? {
            Line::Complete(line) if &line[..] == b"*" => {
                self.refuse(Refusal::Sasl(SaslError::Cancelled));
                Ok(None)
            }
            Line::Complete(line) => Ok(Some(Secret(line.to_vec()))),
            Line::TooLong => {
                self.refuse(Refusal::AuthDataTooLong);
                Ok(None)
            }
        }
    }

    /// APOP (RFC 1939 section 7), checked against the credentials file.
    pub(super) async fn apop(&mut self, user: String, digest: String) -> Reply {
        let (Some(timestamp), Some(creds)) = (self.timestamp.clone(), self.ctx.credentials.clone())
        else {
            return self.refuse(Refusal::ApopUnavailable);
        };
        let admitted = match self.admit(Mechanism::Apop, &user, "").await {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let good = creds.secret(&user).is_some_and(|secret| {
            digest::same(&digest::apop(&timestamp, secret.expose()), &digest)
        });
        if good {
            let proof = Proof::Verified;
            self.login(Mechanism::Apop, user, proof, Some(admitted))
                .await
        } else {
            self.refuse_login(Mechanism::Apop, &user, admitted).await
        }
    }

    /// AUTH CRAM-MD5 (RFC 2195), checked against the credentials file.
    async fn cram_md5(&mut self, initial: Option<&str>) -> Result<Reply, Fault> {
        let Some(creds) = self.ctx.credentials.clone() else {
            return Ok(self.refuse(Refusal::UnsupportedMechanism));
        };
        if initial.is_some() {
            return Ok(self.refuse(Refusal::CramInitialResponse));
        }
        let challenge = new_timestamp(self.id);
        let Some(line) = self.sasl_response(&B64.encode(&challenge)).await? else {
            return Ok(Reply::Err);
        };
        let decoded = B64.decode(line.expose()).ok().map(Secret);
        let answer = decoded
            .as_ref()
            .and_then(|d| std::str::from_utf8(d.expose()).ok());
        let Some((user, digest)) = answer.and_then(|a| a.rsplit_once(' ')) else {
            return Ok(self.refuse(Refusal::MalformedAuthData));
        };
        let (user, digest) = (user.to_string(), digest.to_string());
        let admitted = match self.admit(Mechanism::CramMd5, &user, "").await {
            Ok(a) => a,
            Err(reply) => return Ok(reply),
        };
        let good = creds.secret(&user).is_some_and(|secret| {
            digest::same(&digest::cram_md5(&challenge, secret.expose()), &digest)
        });
        Ok(if good {
            let proof = Proof::Verified;
            self.login(Mechanism::CramMd5, user, proof, Some(admitted))
                .await
        } else {
            self.refuse_login(Mechanism::CramMd5, &user, admitted).await
        })
    }

    /// XOAUTH2 and OAUTHBEARER: the client's response goes upstream as is.
    async fn bearer(&mut self, mech: &str, initial: Option<&str>) -> Result<Reply, Fault> {
        let (label, mechanism) = if mech == "XOAUTH2" {
            (Mechanism::Xoauth2, "XOAUTH2")
        } else {
            (Mechanism::Oauthbearer, "OAUTHBEARER")
        };
        let response = match initial {
            Some(i) => Secret(i.as_bytes().to_vec()),
            None => match self.sasl_response("").await? {
                Some(r) => r,
                None => return Ok(Reply::Err),
            },
        };
        let decoded = B64.decode(response.expose()).ok().map(Secret);
        let Some(user) = decoded.and_then(|d| sasl::bearer_user(mechanism, d.expose())) else {
            return Ok(self.refuse(Refusal::MalformedAuthData));
        };
        let proof = Proof::Token {
            mechanism,
            response,
        };
        Ok(self.login(label, user, proof, None).await)
    }
}
