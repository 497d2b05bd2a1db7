//! Opening the maildrop upstream: connect, log in, SELECT, snapshot. Every
//! failure becomes the POP3 answer a user can act on.

use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::maildrop::Maildrop;
use super::{Context, UserLock};
use crate::imap::{Client, ClientError};
use crate::pop3::{RespCode, Secret};

pub type Upstream = Client<TcpStream>;

/// A logged-in session's upstream side.
pub struct Opened {
    pub imap: Upstream,
    pub maildrop: Maildrop,
    pub lock: Option<UserLock>,
}

/// Why a login failed, as the POP3 client will hear it.
#[derive(Debug)]
pub struct Refusal {
    pub code: RespCode,
    pub text: &'static str,
}

const AUTH_FAILED: Refusal = Refusal {
    code: RespCode::Auth,
    text: "Authentication failed.",
};
const UNAVAILABLE: Refusal = Refusal {
    code: RespCode::SysTemp,
    text: "Mail server unavailable, try again later.",
};

pub async fn open(
    ctx: &Arc<Context>,
    authzid: &str,
    user: &str,
    password: &Secret,
) -> Result<Opened, Refusal> {
    let lock = if ctx.config.session.exclusive {
        match ctx.lock_user(if authzid.is_empty() { user } else { authzid }) {
            Some(l) => Some(l),
            None => {
                return Err(Refusal {
                    code: RespCode::InUse,
                    text: "Mailbox is in use by another POP3 session.",
                })
            }
        }
    } else {
        None
    };
    let up = &ctx.config.upstream;
    let connect = tokio::time::timeout(up.connect_timeout, TcpStream::connect(&up.address.0));
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(upstream = %up.address.0, error = %e, "cannot connect to upstream");
            return Err(UNAVAILABLE);
        }
        Err(_) => {
            warn!(upstream = %up.address.0, "upstream connect timed out");
            return Err(UNAVAILABLE);
        }
    };
    let _ = stream.set_nodelay(true);
    let mut imap = Client::start(stream, up.timeout)
        .await
        .map_err(|e| upstream_failure("greeting", &e))?;

    if let Err(e) = imap.login(authzid, user, password).await {
        if !e.is_refusal() {
            return Err(upstream_failure("login", &e));
        }
        info!(reason = %e, "upstream refused the login");
        return Err(match e.code() {
            Some("UNAVAILABLE" | "SERVERBUG" | "LIMIT") => UNAVAILABLE,
            Some("INUSE") => Refusal {
                code: RespCode::InUse,
                text: "Mailbox is in use.",
            },
            _ => AUTH_FAILED,
        });
    }

    let selected = match imap.select(&ctx.config.mailbox).await {
        Ok(s) => s,
        Err(e) if e.is_refusal() => {
            warn!(mailbox = %ctx.config.mailbox, reason = %e, "upstream refused SELECT");
            return Err(match e.code() {
                Some("INUSE") => Refusal {
                    code: RespCode::InUse,
                    text: "Mailbox is in use.",
                },
                Some("NONEXISTENT") => Refusal {
                    code: RespCode::SysPerm,
                    text: "Mailbox does not exist.",
                },
                _ => UNAVAILABLE,
            });
        }
        Err(e) => return Err(upstream_failure("SELECT", &e)),
    };
    let listing = if selected.exists == 0 {
        Vec::new()
    } else {
        imap.list_messages(selected.exists)
            .await
            .map_err(|e| upstream_failure("snapshot", &e))?
    };
    Ok(Opened {
        imap,
        maildrop: Maildrop::new(selected.uid_validity, &listing),
        lock,
    })
}

fn upstream_failure(stage: &str, e: &ClientError) -> Refusal {
    warn!(stage, error = %e, "upstream failed");
    UNAVAILABLE
}
