//! The UPDATE state (RFC 1939 section 6): what QUIT does upstream with the
//! session's marks. Deleted messages are expunged, moved to another folder
//! or flagged with a keyword (`delete.action`); whatever fails is undone as
//! far as the link allows, so QUIT's answer says what happened and the next
//! session can try again.

use tracing::{info, warn};

use super::MAX_SET_LEN;
use crate::config::{Config, DeleteAction};
use crate::gateway::backend::{Backend, Imap};
use crate::gateway::maildrop::{uid_sets, Maildrop};
use crate::imap::date::search_day;
use crate::imap::ClientError;

/// Why QUIT's UPDATE did not remove every deleted message.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpdateFailure {
    #[error(transparent)]
    Upstream(#[from] ClientError),
    #[error("upstream lacks UIDPLUS and other messages carry \\Deleted")]
    OthersFlagged,
    #[error("folder {0} was renumbered during the session")]
    Renumbered(String),
}

/// UPDATE in every folder of the maildrop that the session touched, in
/// order, SELECTing each in turn (a single folder is SELECTed already).
/// Stops at the first folder that fails. Returns how many messages left
/// the maildrop.
pub(super) async fn update_all(
    backend: &Backend,
    imap: &mut Imap,
    maildrop: &Maildrop,
    mut selected: Option<usize>,
    config: &Config,
) -> Result<usize, UpdateFailure> {
    let mut removed = 0;
    for folder in (0..maildrop.folder_count()).filter(|&f| maildrop.touched(f)) {
        if selected != Some(folder) {
            let name = maildrop.folder_name(folder);
            let sel = backend.timed("SELECT", imap.select(name)).await?;
            if sel.uid_validity != maildrop.uid_validity(folder) {
                return Err(UpdateFailure::Renumbered(name.to_string()));
            }
            selected = Some(folder);
        }
        removed += update(backend, imap, maildrop, folder, config).await?;
    }
    Ok(removed)
}

/// Applies the session's marks upstream: `\Seen` on retrieved messages,
/// then the deletion `delete` configures for exactly the deleted UIDs.
/// Returns how many messages left the maildrop.
async fn update(
    backend: &Backend,
    imap: &mut Imap,
    maildrop: &Maildrop,
    folder: usize,
    config: &Config,
) -> Result<usize, UpdateFailure> {
    let (mark_seen, delete) = (config.session.mark_seen, &config.delete);
    // Expunged messages need no \Seen; moved and flagged ones are kept,
    // read as they were.
    let kept = delete.action != DeleteAction::Expunge;
    if mark_seen {
        for set in uid_sets(&maildrop.retrieved_uids(folder, kept), MAX_SET_LEN) {
            // Not worth failing QUIT over: the mail itself is unaffected.
            if let Err(e) = backend
                .timed("UID STORE", imap.add_flag(&set, "\\Seen"))
                .await
            {
                if !e.is_refusal() {
                    return Err(e.into());
                }
                warn!(error = %e, "could not set \\Seen");
            }
        }
    }
    let mut deleted = maildrop.deleted_uids(folder);
    if let Some(days) = config.policy.expire {
        let expired = expired(backend, imap, &maildrop.retrieved_uids(folder, false), days).await?;
        if !expired.is_empty() {
            info!(
                count = expired.len(),
                days, "removing retrieved messages past EXPIRE"
            );
            deleted.extend(expired);
            deleted.sort_unstable();
            deleted.dedup();
        }
    }
    if deleted.is_empty() {
        return Ok(0);
    }
    let sets = uid_sets(&deleted, MAX_SET_LEN);
    let done = match delete.action {
        DeleteAction::Expunge => expunge(backend, imap, &deleted, &sets).await,
        DeleteAction::Move => move_to(backend, imap, &deleted, &sets, &delete.folder).await,
        DeleteAction::Flag => flag(backend, imap, &sets, &delete.keyword).await,
    };
    done.map(|()| deleted.len())
}

/// EXPIRE: of the messages retrieved (and not deleted) in this session,
/// those whose arrival day (INTERNALDATE, as the server's SEARCH BEFORE
/// counts days) is before the UTC day `days` days ago; with 0, all of them.
async fn expired(
    backend: &Backend,
    imap: &mut Imap,
    retrieved: &[u32],
    days: u32,
) -> Result<Vec<u32>, ClientError> {
    if days == 0 || retrieved.is_empty() {
        return Ok(retrieved.to_vec());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let day = search_day(now - i64::from(days) * 86400);
    let mut out = Vec::new();
    for set in uid_sets(retrieved, MAX_SET_LEN) {
        let found = imap.search_before(&set, &day);
        out.extend(backend.timed("UID SEARCH", found).await?);
    }
    // Only what was asked about, whatever the server answers.
    out.retain(|uid| retrieved.binary_search(uid).is_ok());
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Flags and expunges exactly `deleted`; on failure our `\Deleted` flags
/// are taken back.
async fn expunge(
    backend: &Backend,
    imap: &mut Imap,
    deleted: &[u32],
    sets: &[String],
) -> Result<(), UpdateFailure> {
    let removed = remove(backend, imap, deleted, sets).await;
    if removed.is_err() {
        take_back(backend, imap, sets, "\\Deleted").await;
    }
    removed
}

/// UID MOVE where offered. Otherwise UID COPY of every set first, and only
/// when all are copied the removal: a message is never removed before its
/// copy exists. A failed removal leaves copies behind beside the originals,
/// which the next session may delete (and copy) again.
async fn move_to(
    backend: &Backend,
    imap: &mut Imap,
    deleted: &[u32],
    sets: &[String],
    folder: &str,
) -> Result<(), UpdateFailure> {
    let moves = imap.has_capability("MOVE");
    for set in sets {
        transfer(backend, imap, set, folder, moves).await?;
    }
    if moves {
        return Ok(());
    }
    expunge(backend, imap, deleted, sets).await
}

/// One UID MOVE or UID COPY; a missing folder (`[TRYCREATE]`) is created
/// and the command tried once more.
async fn transfer(
    backend: &Backend,
    imap: &mut Imap,
    set: &str,
    folder: &str,
    moves: bool,
) -> Result<(), ClientError> {
    for attempt in 0..2 {
        let sent = if moves {
            backend.timed("UID MOVE", imap.uid_move(set, folder)).await
        } else {
            backend.timed("UID COPY", imap.uid_copy(set, folder)).await
        };
        match sent {
            Err(e) if attempt == 0 && e.code() == Some("TRYCREATE") => {
                info!(folder, "creating the folder for deleted messages");
                match backend.timed("CREATE", imap.create(folder)).await {
                    Ok(()) => {}
                    // Another session created it first.
                    Err(e) if e.code() == Some("ALREADYEXISTS") => {}
                    Err(e) => return Err(e),
                }
            }
            other => return other,
        }
    }
    unreachable!("the second attempt returns")
}

/// Sets the keyword on every deleted message; on failure the keyword is
/// taken back, so no message is hidden that QUIT did not report.
async fn flag(
    backend: &Backend,
    imap: &mut Imap,
    sets: &[String],
    keyword: &str,
) -> Result<(), UpdateFailure> {
    for set in sets {
        let stored = backend
            .timed("UID STORE", imap.add_flag(set, keyword))
            .await;
        if let Err(e) = stored {
            take_back(backend, imap, sets, keyword).await;
            return Err(e.into());
        }
    }
    Ok(())
}

/// Flags `deleted` (as `sets`) and expunges exactly them.
async fn remove(
    backend: &Backend,
    imap: &mut Imap,
    deleted: &[u32],
    sets: &[String],
) -> Result<(), UpdateFailure> {
    for set in sets {
        backend
            .timed("UID STORE", imap.add_flag(set, "\\Deleted"))
            .await?;
    }
    if imap.has_capability("UIDPLUS") {
        for set in sets {
            backend.timed("UID EXPUNGE", imap.uid_expunge(set)).await?;
        }
        return Ok(());
    }
    // A bare EXPUNGE would also remove what other clients flagged: only
    // expunge when every flagged message is one of ours.
    let flagged = backend.timed("UID SEARCH", imap.search_deleted()).await?;
    if !flagged.iter().all(|uid| deleted.binary_search(uid).is_ok()) {
        return Err(UpdateFailure::OthersFlagged);
    }
    backend.timed("EXPUNGE", imap.expunge()).await?;
    Ok(())
}

/// Takes our flag back after a failed removal. If the link is gone this
/// cannot be done; messages flagged `\Deleted` then stay hidden from POP3
/// until the server expunges them.
async fn take_back(backend: &Backend, imap: &mut Imap, sets: &[String], flag: &str) {
    for set in sets {
        let undone = imap.remove_flag(set, flag);
        if let Err(e) = backend.timed("UID STORE", undone).await {
            warn!(error = %e, flag, "could not take back a flag after a failed update");
            if !e.is_refusal() {
                return;
            }
        }
    }
}
