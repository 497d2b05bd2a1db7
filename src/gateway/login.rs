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
    /// The maildrop folder SELECTed upstream now, if any.
    pub(crate) selected: Option<usize>,
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
    // A pooled connection the server dropped between our check and the
    // login fails without an answer: the login is tried once more on a
    // new connection.
    let mut from_pool = true;
    let (mut imap, counted, logged_in) = loop {
        let (mut imap, counted, pooled) = backend
            .connect_with(Some(req.client), from_pool)
            .await
            .map_err(|_| UNAVAILABLE)?;
        let logged_in = backend
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
            .await;
        match logged_in {
            Err(e) if pooled && !e.is_refusal() => {
                info!(error = %e, "a pooled upstream connection failed; logging in on a new one");
                from_pool = false;
            }
            r => break (imap, counted, r),
        }
    };
    if let Err(e) = logged_in {
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

    let folders = &ctx.config.mailbox.0;
    let several = folders.len() > 1;
    let mut parts = Vec::with_capacity(folders.len());
    // The folder SELECTed last, if its SELECT succeeded.
    let mut selected = None;
    for (i, folder) in folders.iter().enumerate() {
        let hidden = ctx.config.delete.hiding_keyword();
        let opened = backend.timed("SELECT and UID FETCH", imap.open_mailbox(folder, hidden));
        let (sel, listing) = match opened.await {
            Ok(done) => done,
            // One missing folder of several is left out, not the login.
            Err(e) if several && missing(&e) => {
                warn!(mailbox = %folder, "folder missing upstream; left out of the maildrop");
                selected = None;
                parts.push((folder.clone(), Maildrop::new(0, &[])));
                continue;
            }
            Err(e) if e.is_refusal() => {
                warn!(mailbox = %folder, reason = %e, "upstream refused SELECT");
                return Err(match e.code() {
                    Some("INUSE") => IN_USE,
                    Some("NONEXISTENT") => LoginFailure::NoMailbox,
                    _ => UNAVAILABLE,
                });
            }
            Err(_) => return Err(UNAVAILABLE),
        };
        selected = Some(i);
        ctx.metrics.snapshot_messages.observe(listing.len() as f64);
        // The old POP3 server's maildrop is the first folder.
        let migrate = i == 0;
        let part = remembered(ctx, backend, req, &mut imap, folder, sel, listing, migrate).await?;
        parts.push((folder.clone(), part));
    }
    ctx.metrics
        .upstream_login_seconds
        .with_label_values(&[&backend.name])
        .observe(started.elapsed().as_secs_f64());
    let maildrop = match several {
        false => parts
            .pop()
            .map(|(_, p)| p)
            .unwrap_or_else(|| Maildrop::new(0, &[])),
        true => Maildrop::join(parts),
    };
    // After the UIDL memory has seen every message: a message outside the
    // window keeps its UIDL for when the window reaches it.
    let maildrop = maildrop.newest(ctx.config.session.max_messages);
    Ok(Opened {
        backend: backend.clone(),
        imap,
        fetch: Pipeline::default(),
        maildrop,
        selected,
        user_slot,
        counted,
    })
}

/// One folder's snapshot, through the UIDL memory when there is one.
#[expect(clippy::too_many_arguments, reason = "one call site, all needed")]
async fn remembered(
    ctx: &Arc<Context>,
    backend: &Arc<Backend>,
    req: &Request<'_>,
    imap: &mut Imap,
    folder: &str,
    selected: crate::imap::Selected,
    listing: Vec<crate::imap::Listing>,
    migrate: bool,
) -> Result<Maildrop, LoginFailure> {
    let v = selected.uid_validity;
    let Some(memory) = &ctx.uidls else {
        return Ok(Maildrop::new(v, &listing));
    };
    let key = MailboxKey {
        route: backend.name.clone(),
        user: req.mailbox_owner.to_lowercase(),
        folder: folder.to_string(),
    };
    let source = ctx
        .migration
        .as_ref()
        .filter(|_| migrate)
        .map(|s| OldServer::Ask(s, &req.old_owner, s.on_failure()));
    let r = memory
        .remember(
            imap,
            &key,
            v,
            listing,
            &ctx.config.uidl_format,
            &ctx.metrics,
            source,
        )
        .await
        .map_err(|e| match e {
            Unsettled::Store => LoginFailure::StoreUnavailable,
            Unsettled::Upstream(_) => UNAVAILABLE,
        })?;
    Ok(Maildrop::new(v, &r.listing).with_exceptions(r.exceptions))
}

/// A SELECT refused because the folder is not there: `[NONEXISTENT]`, or
/// a plain NO without a code (Dovecot's "Mailbox doesn't exist"), not a
/// refusal that says the server is busy or broken.
fn missing(e: &crate::imap::ClientError) -> bool {
    matches!(e, crate::imap::ClientError::Refused { status: crate::imap::Status::No, code, .. }
        if code.as_deref().is_none_or(|c| c == "NONEXISTENT"))
}
