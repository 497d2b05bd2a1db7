//! The work of a login whose mailbox memory is not current: fingerprints
//! of the messages not seen before (a hash of selected header fields), the
//! old POP3 server's UIDLs on first contact, and the assignment of UIDLs.
//! Kept across a lost compare-and-set, so a retry reads nothing twice.

use std::collections::HashMap;
use std::time::Instant;

use tracing::{info, warn};

use super::backend::Imap;
use super::maildrop::uid_sets;
use super::migration;
use crate::config::migration::OnFailure;
use crate::imap::{ClientError, Listing};
use crate::metrics::{Metrics, UidlEvent};
use crate::migration::{matcher::OldMessage, Owner, Source};
use crate::pop3::uidl::UidlTemplate;
use crate::state::{matcher, MailboxKey, Memory, Print};

/// The header fields whose hash tells messages of equal size and date apart.
/// INTERNALDATE comes along: asking for it in every login snapshot would
/// slow the listing of big mailboxes (measured: about 1.5x).
const HEADERS: &str = "INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]";

/// Where a mailbox never seen before gets its UIDLs from.
pub(crate) enum OldServer<'a> {
    /// Ask the old server at this login; a failure is handled per
    /// `on_failure`.
    Ask(&'a Source, &'a Owner<'a>, OnFailure),
    /// Its messages, read already (the bulk import).
    Read(Vec<OldMessage>),
}

/// What a migration found: old messages, paired, not paired.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Migrated {
    pub(crate) old_messages: usize,
    pub(crate) matched: usize,
    pub(crate) unmatched: usize,
}

/// Why a login's UIDLs could not be settled.
#[derive(Debug)]
pub(crate) enum Unsettled {
    /// The upstream failed while the headers were read, or the old
    /// server's read failed with `on_failure: refuse`.
    Upstream(ClientError),
    /// The store failed and `state.on_unavailable` is `refuse`.
    Store,
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::Upstream(e) => write!(f, "IMAP server: {e}"),
            Unsettled::Store => f.write_str("the state store is unavailable"),
        }
    }
}

impl From<ClientError> for Unsettled {
    fn from(e: ClientError) -> Self {
        Unsettled::Upstream(e)
    }
}

pub(super) struct Work<'a> {
    migration: Option<OldServer<'a>>,
    /// The old server's messages once asked (`Some(None)`: it failed and
    /// the login goes on without them).
    old_messages: Option<Option<Vec<OldMessage>>>,
    /// (hash, INTERNALDATE) by UID, of the messages fingerprinted so far.
    hashes: HashMap<u32, (u64, u32)>,
}

/// A computed memory, not stored yet.
pub(super) struct Assigned {
    /// The snapshot, less messages expunged before they were fingerprinted.
    pub(super) listing: Vec<Listing>,
    pub(super) assignment: matcher::Assignment,
    pub(super) migrated: Option<Migrated>,
    /// Messages fingerprinted by this login.
    pub(super) fingerprinted: usize,
}

impl<'a> Work<'a> {
    pub(super) fn new(migration: Option<OldServer<'a>>) -> Work<'a> {
        Work {
            migration,
            old_messages: None,
            hashes: HashMap::new(),
        }
    }

    /// The memory for this snapshot given the stored one (`old`); `None`
    /// when the upstream refused the header fetch (template UIDLs).
    // The snapshot and everything that shapes its UIDLs.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn assign(
        &mut self,
        imap: &mut Imap,
        key: &MailboxKey,
        old: Option<&Memory>,
        uid_validity: u32,
        listing: &[Listing],
        template: &UidlTemplate,
        metrics: &Metrics,
    ) -> Result<Option<Assigned>, Unsettled> {
        let started = Instant::now();
        // A mailbox never seen: its UIDLs come from the old server, if any.
        if old.is_none() && self.old_messages.is_none() {
            self.old_messages = Some(match self.migration.take() {
                Some(OldServer::Ask(source, owner, on_failure)) => {
                    read_old(source, owner, on_failure, &key.user, metrics).await?
                }
                Some(OldServer::Read(messages)) => Some(messages),
                None => None,
            });
        }
        // (hash, date) by UID.
        let known: HashMap<u32, (u64, u32)> = match old {
            Some(m) if m.uid_validity == uid_validity => {
                m.prints.iter().map(|p| (p.uid, (p.hash, p.date))).collect()
            }
            _ => HashMap::new(),
        };
        let missing: Vec<u32> = listing
            .iter()
            .map(|l| l.uid)
            .filter(|u| !known.contains_key(u) && !self.hashes.contains_key(u))
            .collect();
        match header_hashes(imap, &missing).await {
            Ok(h) => self.hashes.extend(h),
            Err(e) if e.is_refusal() => {
                warn!(user = %key.user, error = %e, "header fetch refused: template UIDLs this session");
                metrics.uidl_event(UidlEvent::StoreFailed);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let fingerprint = |uid: &u32| known.get(uid).or(self.hashes.get(uid)).copied();
        let listing: Vec<Listing> = listing
            .iter()
            .filter(|l| fingerprint(&l.uid).is_some())
            .cloned()
            .collect();
        let prints: Vec<Print> = listing
            .iter()
            .map(|l| {
                let (hash, date) = fingerprint(&l.uid).unwrap_or_default();
                Print {
                    uid: l.uid,
                    size: l.size,
                    date,
                    hash,
                }
            })
            .collect();
        let mut assignment = matcher::assign(old, &prints, uid_validity, template);
        let mut migrated = None;
        if let Some(Some(messages)) = self.old_messages.as_ref().filter(|_| old.is_none()) {
            let ms = started.elapsed().as_millis() as u64;
            let (memory, matched) =
                migration::assign(imap, messages, &prints, uid_validity, template).await?;
            info!(
                user = %key.user,
                old_messages = messages.len(),
                matched,
                unmatched = prints.len() - matched,
                duration_ms = ms,
                "UIDLs migrated from the old POP3 server"
            );
            metrics.uidl_event(UidlEvent::Migrated);
            assignment.memory = memory;
            migrated = Some(Migrated {
                old_messages: messages.len(),
                matched,
                unmatched: prints.len() - matched,
            });
        }
        Ok(Some(Assigned {
            listing,
            assignment,
            migrated,
            fingerprinted: missing.len(),
        }))
    }
}

/// The old server's messages; `None` when it failed and `on_failure:
/// continue` goes on with template UIDLs. With `refuse` a failure ends
/// the login, and nothing is stored.
async fn read_old(
    source: &Source,
    owner: &Owner<'_>,
    on_failure: OnFailure,
    user: &str,
    metrics: &Metrics,
) -> Result<Option<Vec<OldMessage>>, ClientError> {
    match source.read_old(owner).await {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            warn!(
                user = %user,
                old_server = %source.config.address.0,
                error = %e,
                on_failure = %on_failure.as_str(),
                "UIDL migration from the old POP3 server failed"
            );
            metrics.uidl_event(UidlEvent::MigrationFailed);
            match on_failure {
                OnFailure::Refuse => Err(ClientError::Protocol("UIDL migration failed".into())),
                OnFailure::Continue => Ok(None),
            }
        }
    }
}

/// A hash of each message's selected header fields and its INTERNALDATE,
/// by UID; a message expunged meanwhile has none.
async fn header_hashes(
    imap: &mut Imap,
    uids: &[u32],
) -> Result<HashMap<u32, (u64, u32)>, ClientError> {
    let mut out = HashMap::with_capacity(uids.len());
    for set in uid_sets(uids, 900) {
        let tag = imap.fetch_bodies(&set, HEADERS).await?;
        while let Some(start) = imap.next_body(&tag).await? {
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            while let Some(chunk) = imap.body_chunk().await? {
                digest.update(&chunk);
            }
            if let Some(uid) = start.uid {
                let d = digest.finish();
                let mut first = [0u8; 8];
                first.copy_from_slice(&d.as_ref()[..8]);
                out.insert(uid, (u64::from_le_bytes(first), start.date.unwrap_or(0)));
            }
        }
    }
    Ok(out)
}
