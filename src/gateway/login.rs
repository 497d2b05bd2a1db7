//! Opening the maildrop upstream: connect, log in, SELECT, snapshot. Every
//! failure becomes the POP3 answer a user can act on.

use std::sync::Arc;

use std::time::Instant;

use tracing::{info, warn};

use super::maildrop::Maildrop;
use super::upstream::{self, Imap, OpenGuard};
use super::{Context, UserLock, DEFAULT_ROUTE};
use crate::pop3::{RespCode, Secret};

/// A logged-in session's upstream side.
pub struct Opened {
    pub imap: Imap,
    pub maildrop: Maildrop,
    pub lock: Option<UserLock>,
    pub counted: OpenGuard,
}

/// Why a login failed, as the POP3 client will hear it.
#[derive(Debug)]
pub struct Refusal {
    pub code: RespCode,
    pub text: &'static str,
    /// The `result` label of `popgate_logins_total`.
    pub result: &'static str,
}

const AUTH_FAILED: Refusal = Refusal {
    code: RespCode::Auth,
    text: "Authentication failed.",
    result: "auth_failed",
};
const UNAVAILABLE: Refusal = Refusal {
    code: RespCode::SysTemp,
    text: "Mail server unavailable, try again later.",
    result: "upstream_unavailable",
};
const IN_USE: Refusal = Refusal {
    code: RespCode::InUse,
    text: "Mailbox is in use.",
    result: "in_use",
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
                    text: "Mailbox is in use by another POP3 session.",
                    ..IN_USE
                })
            }
        }
    } else {
        None
    };
    let started = Instant::now();
    let (mut imap, counted) = upstream::connect(ctx).await.map_err(|_| UNAVAILABLE)?;

    if let Err(e) = upstream::timed(ctx, "login", imap.login(authzid, user, password)).await {
        if !e.is_refusal() {
            return Err(UNAVAILABLE);
        }
        info!(reason = %e, "upstream refused the login");
        return Err(match e.code() {
            Some("UNAVAILABLE" | "SERVERBUG" | "LIMIT") => UNAVAILABLE,
            Some("INUSE") => IN_USE,
            _ => AUTH_FAILED,
        });
    }

    let selected = match upstream::timed(ctx, "SELECT", imap.select(&ctx.config.mailbox)).await {
        Ok(s) => s,
        Err(e) if e.is_refusal() => {
            warn!(mailbox = %ctx.config.mailbox, reason = %e, "upstream refused SELECT");
            return Err(match e.code() {
                Some("INUSE") => IN_USE,
                Some("NONEXISTENT") => Refusal {
                    code: RespCode::SysPerm,
                    text: "Mailbox does not exist.",
                    result: "mailbox_error",
                },
                _ => UNAVAILABLE,
            });
        }
        Err(_) => return Err(UNAVAILABLE),
    };
    let listing = if selected.exists == 0 {
        Vec::new()
    } else {
        upstream::timed(
            ctx,
            "UID FETCH snapshot",
            imap.list_messages(selected.exists),
        )
        .await
        .map_err(|_| UNAVAILABLE)?
    };
    let m = &ctx.metrics;
    m.upstream_login_seconds
        .with_label_values(&[DEFAULT_ROUTE])
        .observe(started.elapsed().as_secs_f64());
    m.snapshot_messages.observe(listing.len() as f64);
    Ok(Opened {
        imap,
        maildrop: Maildrop::new(selected.uid_validity, &listing),
        lock,
        counted,
    })
}
