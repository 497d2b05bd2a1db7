//! The UIDL memory at login: brings the mailbox's memory up to date with
//! the snapshot (prints of new messages, a re-match after a UIDVALIDITY
//! change) and gives the maildrop the UIDLs that are not the template's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::backend::Imap;
use super::fingerprint::Work;
pub(crate) use super::fingerprint::{Migrated, OldServer, Unsettled};
use crate::config::OnUnavailable;
use crate::imap::Listing;
use crate::metrics::{Metrics, UidlEvent};
use crate::pop3::uidl::UidlTemplate;
use crate::state::{matcher, MailboxKey, Memory, Saved, StateStore};

pub(crate) struct UidlMemory {
    store: Arc<dyn StateStore>,
    on_unavailable: OnUnavailable,
    /// One lock per mailbox, so that this instance's logins do the work
    /// once; instances agree through the store's compare-and-set.
    locks: Mutex<HashMap<MailboxKey, Weak<tokio::sync::Mutex<()>>>>,
}

/// Saves lost to another instance before this one gives up; each loss
/// means the other's record is newer, so a retry usually finds it current.
const ATTEMPTS: usize = 4;

/// What the maildrop is built from.
pub(crate) struct Remembered {
    /// The snapshot, less messages expunged before they were fingerprinted.
    pub(crate) listing: Vec<Listing>,
    pub(crate) exceptions: HashMap<u32, String>,
    /// Set when this login migrated the mailbox.
    pub(crate) migrated: Option<Migrated>,
}

impl UidlMemory {
    pub(crate) fn new(store: Arc<dyn StateStore>, on_unavailable: OnUnavailable) -> UidlMemory {
        UidlMemory {
            store,
            on_unavailable,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
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
    /// returned. A store that fails gives template UIDLs and a warning, or
    /// refuses, as `state.on_unavailable` says; an upstream that fails
    /// mid-fetch is an error.
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
    ) -> Result<Remembered, Unsettled> {
        let lock = self.lock_for(key);
        let _held = lock.lock().await;
        let started = Instant::now();
        let fallback = |listing, e: &dyn std::fmt::Display| {
            metrics.uidl_event(UidlEvent::StoreFailed);
            if self.on_unavailable == OnUnavailable::Refuse {
                warn!(user = %key.user, error = %e, "UIDL store unavailable: login refused");
                return Err(Unsettled::Store);
            }
            warn!(user = %key.user, error = %e, "UIDL store unavailable: template UIDLs this session");
            Ok(Remembered {
                listing,
                exceptions: HashMap::new(),
                migrated: None,
            })
        };
        let mut work = Work::new(migration);
        for _ in 0..ATTEMPTS {
            let old = match self.store.load(key).await {
                Ok(m) => m,
                Err(e) => return fallback(listing, &e),
            };
            let memory = old.as_ref().map(|s| &s.memory);
            if let Some(m) = memory.filter(|m| unchanged(m, uid_validity, &listing)) {
                // The usual login: nothing new, nothing gone.
                let exceptions = m.exceptions.clone().into_iter().collect();
                return Ok(Remembered {
                    listing,
                    exceptions,
                    migrated: None,
                });
            }
            let assigned = work
                .assign(imap, key, memory, uid_validity, &listing, template, metrics)
                .await?;
            let Some(assigned) = assigned else {
                return Ok(Remembered {
                    listing,
                    exceptions: HashMap::new(),
                    migrated: None,
                });
            };
            let a = assigned.assignment;
            match self.store.save(key, &a.memory, old.as_ref()).await {
                Err(e) => return fallback(assigned.listing, &e),
                Ok(Saved::Conflict) => {
                    debug!(user = %key.user, "UIDL memory changed meanwhile: computed again");
                    continue;
                }
                Ok(Saved::Done) => {}
            }
            self.report(key, memory, &a, assigned.fingerprinted, started, metrics);
            return Ok(Remembered {
                listing: assigned.listing,
                exceptions: a.memory.exceptions.into_iter().collect(),
                migrated: assigned.migrated,
            });
        }
        fallback(listing, &"the record kept changing under this login")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::embedded::Embedded;

    #[test]
    fn a_held_mailbox_lock_is_handed_out_again_and_a_released_one_forgotten() {
        let dir = crate::test_support::TestDir::new("locks");
        let store = Embedded::open(&dir.0).expect("store");
        let memory = UidlMemory::new(Arc::new(store), OnUnavailable::Refuse);
        let key = |user: &str| MailboxKey {
            route: "default".into(),
            user: user.into(),
            folder: "INBOX".into(),
        };
        let held = memory.lock_for(&key("a"));
        drop(memory.lock_for(&key("b")));
        let _c = memory.lock_for(&key("c"));
        assert!(Arc::ptr_eq(&held, &memory.lock_for(&key("a"))));
        let locks = memory.locks.lock().unwrap().len();
        assert_eq!(locks, 2, "b's released lock went when c's was made");
    }
}
