//! The UIDL memory at login: brings the mailbox's memory up to date with
//! the snapshot (prints of new messages, a re-match after a UIDVALIDITY
//! change) and gives the maildrop the UIDLs that are not the template's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tracing::{info, warn};

use super::backend::Imap;
use super::maildrop::uid_sets;
use crate::config::State;
use crate::imap::{ClientError, Listing};
use crate::metrics::{Metrics, UidlEvent};
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
    pub(crate) async fn remember(
        &self,
        imap: &mut Imap,
        key: &MailboxKey,
        uid_validity: u32,
        listing: Vec<Listing>,
        template: &UidlTemplate,
        metrics: &Metrics,
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
            });
        }
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
        let a = matcher::assign(old.as_ref(), &prints, uid_validity, template);
        if old.as_ref() != Some(&a.memory) {
            if let Err(e) = self.store.save(key, &a.memory).await {
                return fallback(listing, &e);
            }
        }
        self.report(key, old.as_ref(), &a, missing.len(), started, metrics);
        Ok(Remembered {
            listing,
            exceptions: a.memory.exceptions.into_iter().collect(),
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
