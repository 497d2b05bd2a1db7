//! Opening the maildrop upstream: connect, log in, SELECT, snapshot. Every
//! failure becomes the POP3 answer a user can act on.

use std::sync::Arc;

use std::time::Instant;

use tracing::{info, warn};

use super::answer::LoginFailure;
use super::backend::{Backend, Endpoints, Imap, OpenGuard};
use super::cluster::{SessionSlot, Turned};
use super::fetch::Pipeline;
use super::limits::Key;
use super::maildrop::Maildrop;
use super::uidls::OldServer;
use super::uidls::Unsettled;
use super::Context;
use crate::metrics::LimitKind;
use crate::secret::Secret;
use crate::state::MailboxKey;

/// A logged-in session's upstream side.
pub(crate) struct Opened {
    pub(crate) backend: Arc<Backend>,
    pub(crate) imap: Imap,
    /// RETR and TOP's body fetches.
    pub(crate) fetch: Pipeline,
    pub(crate) maildrop: Maildrop,
    pub(crate) user_slot: SessionSlot,
    pub(crate) counted: OpenGuard,
}

const AUTH_FAILED: LoginFailure = LoginFailure::AuthFailed;
const UNAVAILABLE: LoginFailure = LoginFailure::Unavailable;
const IN_USE: LoginFailure = LoginFailure::InUse;

/// A login to perform upstream.
pub(crate) struct Request<'a> {
    /// The maildrop's owner (the canonical user's key), for the per-user
    /// session limit.
    pub(crate) owner: Key,
    /// The same, as every instance names it; with a cluster only.
    pub(crate) owner_id: Option<&'a str>,
    /// The maildrop's owner by name, as the upstream knows it: the key of
    /// the mailbox's UIDL memory.
    pub(crate) mailbox_owner: &'a str,
    pub(crate) credentials: UpstreamProof<'a>,
    /// The user as the old POP3 server knows them, for a migration.
    pub(crate) old_owner: crate::migration::Owner<'a>,
    pub(crate) client: Endpoints,
}

/// What proves the login upstream.
pub(crate) enum UpstreamProof<'a> {
    /// LOGIN or AUTHENTICATE PLAIN; `authzid` names the maildrop when a
    /// master user logs in on someone's behalf.
    Password {
        authzid: &'a str,
        user: &'a str,
        password: &'a Secret,
    },
    /// A SASL mechanism passed through as is (XOAUTH2, OAUTHBEARER) with
    /// the client's base64 response.
    Token {
        mechanism: &'a str,
        response: &'a Secret,
    },
}

pub(crate) async fn open(
    ctx: &Arc<Context>,
    backend: &Arc<Backend>,
    req: &Request<'_>,
) -> Result<Opened, LoginFailure> {
    let started = Instant::now();
    let (mut imap, counted) = backend
        .connect(Some(req.client))
        .await
        .map_err(|_| UNAVAILABLE)?;

    if let Err(e) = backend
        .timed("login", async {
            match req.credentials {
                UpstreamProof::Password {
                    authzid,
                    user,
                    password,
                } => imap.login(authzid, user, password).await,
                UpstreamProof::Token {
                    mechanism,
                    response,
                } => imap.authenticate(mechanism, response).await,
            }
        })
        .await
    {
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
    // Counted only now that the user is proven: a stranger can neither take
    // the user's slots nor learn from [IN-USE] that the user is logged in.
    let slot = match (&ctx.cluster, req.owner_id) {
        (Some(cluster), Some(id)) => cluster.session(&ctx.limits, req.owner, id).await,
        _ => Ok(ctx
            .limits
            .per_user
            .acquire(req.owner)
            .map(SessionSlot::Local)),
    };
    let user_slot = match slot {
        Ok(Some(slot)) => slot,
        Ok(None) => {
            ctx.metrics.limit_rejected(LimitKind::SessionsPerUser);
            imap.logout().await;
            return Err(LoginFailure::UserLimit);
        }
        Err(Turned::StoreDown | Turned::Crowded) => {
            imap.logout().await;
            return Err(LoginFailure::StoreUnavailable);
        }
    };

    if let Some(delays) = &ctx.login_delays {
        let admitted = match (&ctx.cluster, req.owner_id) {
            (Some(cluster), Some(id)) => cluster.login_delay(delays, req.owner, id).await,
            _ => Ok(delays.admit(req.owner, Instant::now())),
        };
        match admitted {
            Ok(true) => {}
            Ok(false) => {
                info!("login refused: the user logged in too recently");
                imap.logout().await;
                return Err(LoginFailure::LoginDelay);
            }
            Err(_) => {
                imap.logout().await;
                return Err(LoginFailure::StoreUnavailable);
            }
        }
    }

    let opened = backend.timed(
        "SELECT and UID FETCH",
        imap.open_mailbox(&ctx.config.mailbox, ctx.config.delete.hiding_keyword()),
    );
    let (selected, listing) = match opened.await {
        Ok(done) => done,
        Err(e) if e.is_refusal() => {
            warn!(mailbox = %ctx.config.mailbox, reason = %e, "upstream refused SELECT");
            return Err(match e.code() {
                Some("INUSE") => IN_USE,
                Some("NONEXISTENT") => LoginFailure::NoMailbox,
                _ => UNAVAILABLE,
            });
        }
        Err(_) => return Err(UNAVAILABLE),
    };
    let m = &ctx.metrics;
    m.upstream_login_seconds
        .with_label_values(&[&backend.name])
        .observe(started.elapsed().as_secs_f64());
    m.snapshot_messages.observe(listing.len() as f64);
    let maildrop = match &ctx.uidls {
        None => Maildrop::new(selected.uid_validity, &listing),
        Some(memory) => {
            let key = MailboxKey {
                route: backend.name.clone(),
                user: req.mailbox_owner.to_lowercase(),
                folder: ctx.config.mailbox.clone(),
            };
            let v = selected.uid_validity;
            let source = ctx
                .migration
                .as_ref()
                .map(|s| OldServer::Ask(s, &req.old_owner, s.on_failure()));
            let r = memory
                .remember(
                    &mut imap,
                    &key,
                    v,
                    listing,
                    &ctx.config.uidl_format,
                    m,
                    source,
                )
                .await
                .map_err(|e| match e {
                    Unsettled::Store => LoginFailure::StoreUnavailable,
                    Unsettled::Upstream(_) => UNAVAILABLE,
                })?;
            Maildrop::new(v, &r.listing).with_exceptions(r.exceptions)
        }
    };
    // After the UIDL memory has seen every message: a message outside the
    // window keeps its UIDL for when the window reaches it.
    let maildrop = maildrop.newest(ctx.config.session.max_messages);
    Ok(Opened {
        backend: backend.clone(),
        imap,
        fetch: Pipeline::default(),
        maildrop,
        user_slot,
        counted,
    })
}
