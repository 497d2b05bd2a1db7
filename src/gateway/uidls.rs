//! The UIDL memory at login: brings the mailbox's memory up to date with
//! the snapshot (prints of new messages, a re-match after a UIDVALIDITY
//! change) and gives the maildrop the UIDLs that are not the template's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tracing::{info, warn};

use super::backend::Imap;
use super::maildrop::uid_sets;
use super::migration;
use crate::config::migration::OnFailure;
use crate::config::State;
use crate::imap::{ClientError, Listing};
use crate::metrics::{Metrics, UidlEvent};
use crate::migration::{matcher::OldMessage, Owner, Source};

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
use crate::pop3::uidl::UidlTemplate;
use crate::state::embedded::Embedded;
use crate::state::{matcher, MailboxKey, Memory, Print, StateStore};

/// The header fields whose hash tells messages of equal size and date apart.
/// INTERNALDATE comes along: asking for it in every login snapshot would
/// slow the listing of big mailboxes (measured: about 1.5x).
const HEADERS: &str = "INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]";

pub(crate) struct UidlMemory {
    store: Arc<dyn StateStore>,
    /// One lock per mailbox, so that concurrent logins agree.
    locks: Mutex<HashMap<MailboxKey, Weak<tokio::sync::Mutex<()>>>>,
}

/// What the maildrop is built from.
pub(crate) struct Remembered {
    /// The snapshot, less messages expunged before they were fingerprinted.
    pub(crate) listing: Vec<Listing>,
    pub(crate) exceptions: HashMap<u32, String>,
    /// Set when this login migrated the mailbox.
    pub(crate) migrated: Option<Migrated>,
}

impl UidlMemory {
    /// Opens the store `state` names; the error names the file.
    pub(crate) fn open(state: &State) -> Result<UidlMemory, String> {
        let store = Embedded::open(&state.path).map_err(|e| format!("state.path: {e}"))?;
        Ok(UidlMemory::with_store(Arc::new(store)))
    }

    pub(crate) fn with_store(store: Arc<dyn StateStore>) -> UidlMemory {
        UidlMemory {
            store,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the store holds a record of this mailbox.
    pub(crate) async fn knows(&self, key: &MailboxKey) -> Result<bool, crate::state::StateError> {
        Ok(self.store.load(key).await?.is_some())
    }

    fn lock_for(&self, key: &MailboxKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = locks.get(key).and_then(Weak::upgrade) {
            return l;
        }
        locks.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.clone(), Arc::downgrade(&l));
        l
    }

    /// The maildrop's exceptions for this snapshot, stored before they are
    /// returned. A store that fails gives none (template UIDLs) and a
    /// warning; an upstream that fails mid-fetch is an error.
    // The login's snapshot and everything that shapes its UIDLs: grouping
    // them would only move the list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn remember(
        &self,
        imap: &mut Imap,
        key: &MailboxKey,
        uid_validity: u32,
        listing: Vec<Listing>,
        template: &UidlTemplate,
        metrics: &Metrics,
        migration: Option<OldServer<'_>>,
    ) -> Result<Remembered, ClientError> {
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let started = Instant::now();
        let fallback = |listing, e: &dyn std::fmt::Display| {
            warn!(user = %key.user, error = %e, "UIDL store unavailable: template UIDLs this session");
            metrics.uidl_event(UidlEvent::StoreFailed);
            Ok(Remembered {
                listing,
                exceptions: HashMap::new(),
                migrated: None,
            })
        };
        let old = match self.store.load(key).await {
            Ok(m) => m,
            Err(e) => return fallback(listing, &e),
        };
        if let Some(m) = old
            .as_ref()
            .filter(|m| unchanged(m, uid_validity, &listing))
        {
            // The usual login: nothing new, nothing gone.
            let exceptions = m.exceptions.clone().into_iter().collect();
            return Ok(Remembered {
                listing,
                exceptions,
                migrated: None,
            });
        }
        // A mailbox never seen: its UIDLs come from the old server, if any.
        let old_server = match migration.filter(|_| old.is_none()) {
            Some(OldServer::Ask(source, owner, on_failure)) => {
                read_old(source, owner, on_failure, &key.user, metrics).await?
            }
            Some(OldServer::Read(messages)) => Some(messages),
            None => None,
        };
        // (hash, date) by UID.
        let known: HashMap<u32, (u64, u32)> = match &old {
            Some(m) if m.uid_validity == uid_validity => {
                m.prints.iter().map(|p| (p.uid, (p.hash, p.date))).collect()
            }
            _ => HashMap::new(),
        };
        let missing: Vec<u32> = listing
            .iter()
            .map(|l| l.uid)
            .filter(|u| !known.contains_key(u))
            .collect();
        let hashes = match header_hashes(imap, &missing).await {
            Ok(h) => h,
            Err(e) if e.is_refusal() => return fallback(listing, &e),
            Err(e) => return Err(e),
        };
        let listing: Vec<Listing> = listing
            .into_iter()
            .filter(|l| known.contains_key(&l.uid) || hashes.contains_key(&l.uid))
            .collect();
        let prints: Vec<Print> = listing
            .iter()
            .map(|l| {
                let (hash, date) = known
                    .get(&l.uid)
                    .or(hashes.get(&l.uid))
                    .copied()
                    .unwrap_or_default();
                Print {
                    uid: l.uid,
                    size: l.size,
                    date,
                    hash,
                }
            })
            .collect();
        let mut a = matcher::assign(old.as_ref(), &prints, uid_validity, template);
        let mut migrated = None;
        if let Some(messages) = old_server {
            let ms = started.elapsed().as_millis() as u64;
            let (memory, matched) =
                migration::assign(imap, &messages, &prints, uid_validity, template).await?;
            info!(
                user = %key.user,
                old_messages = messages.len(),
                matched,
                unmatched = prints.len() - matched,
                duration_ms = ms,
                "UIDLs migrated from the old POP3 server"
            );
            metrics.uidl_event(UidlEvent::Migrated);
            a.memory = memory;
            migrated = Some(Migrated {
                old_messages: messages.len(),
                matched,
                unmatched: prints.len() - matched,
            });
        }
        if old.as_ref() != Some(&a.memory) {
            if let Err(e) = self.store.save(key, &a.memory).await {
                return fallback(listing, &e);
            }
        }
        self.report(key, old.as_ref(), &a, missing.len(), started, metrics);
        Ok(Remembered {
            listing,
            exceptions: a.memory.exceptions.into_iter().collect(),
            migrated,
        })
    }

    fn report(
        &self,
        key: &MailboxKey,
        old: Option<&Memory>,
        a: &matcher::Assignment,
        fingerprinted: usize,
        started: Instant,
        metrics: &Metrics,
    ) {
        let ms = started.elapsed().as_millis() as u64;
        match old {
            Some(m) if m.uid_validity != a.memory.uid_validity => {
                info!(
                    user = %key.user,
                    matched = a.matched,
                    unmatched = a.unmatched,
                    duration_ms = ms,
                    "UIDVALIDITY changed: UIDLs re-matched"
                );
                metrics.uidl_event(UidlEvent::Rematch);
                metrics.uidl_rematched(a.matched as u64, a.unmatched as u64);
            }
            None => {
                info!(user = %key.user, messages = fingerprinted, duration_ms = ms, "mailbox fingerprinted");
                metrics.uidl_event(UidlEvent::FirstContact);
            }
            Some(_) => {}
        }
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

/// The memory already describes this snapshot exactly.
fn unchanged(m: &Memory, uid_validity: u32, listing: &[Listing]) -> bool {
    m.uid_validity == uid_validity
        && m.prints.len() == listing.len()
        && m.prints
            .iter()
            .zip(listing)
            .all(|(p, l)| p.uid == l.uid && p.size == l.size)
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
