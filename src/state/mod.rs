//! The UIDL memory: what popgate remembers per mailbox so that a UIDL once
//! given stays that message's UIDL after its UID changes. The session talks
//! to a [`StateStore`]; `embedded` is the on-disk backend of one instance,
//! `redis` the backend several instances share (with their session leases
//! and login penalty).

mod codec;
pub mod embedded;
pub mod matcher;
pub mod redis;
mod scripts;
pub mod tokens;

use std::collections::BTreeMap;

use async_trait::async_trait;

/// One mailbox: the route it is reached through, the upstream user and the
/// folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailboxKey {
    pub route: String,
    pub user: String,
    pub folder: String,
}

impl MailboxKey {
    /// The key as stored: the parts joined by NUL, which none may contain
    /// in a way that makes two keys equal (IMAP names and users carry no NUL).
    pub fn encoded(&self) -> String {
        format!("{}\0{}\0{}", self.route, self.user, self.folder)
    }
}

/// What recognises a message after its UID changed: its size and
/// INTERNALDATE from the login snapshot, and a hash of selected header
/// fields fetched once when it was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Print {
    pub uid: u32,
    pub size: u64,
    /// INTERNALDATE in seconds since 1970.
    pub date: u32,
    pub hash: u64,
}

impl Print {
    /// Everything but the UID: equal content gives an equal key.
    pub fn content(&self) -> (u64, u32, u64) {
        (self.size, self.date, self.hash)
    }
}

/// A mailbox's memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The UIDVALIDITY the UIDLs were issued under.
    pub uid_validity: u32,
    /// One per message of the last snapshot, sorted by UID.
    pub prints: Vec<Print>,
    /// UID -> UIDL for the messages whose UIDL is not the template's.
    pub exceptions: BTreeMap<u32, String>,
}

impl Memory {
    /// The stored form; see `codec` for the layout.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Memory, StateError> {
        codec::decode(bytes).ok_or(StateError::Corrupt)
    }
}

/// A memory as read from the store, with the stamp of the bytes it was
/// read from: a save that names it succeeds only if they are unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub memory: Memory,
    pub stamp: Stamp,
}

impl Stored {
    pub fn decode(bytes: &[u8]) -> Result<Stored, StateError> {
        Ok(Stored {
            memory: Memory::decode(bytes)?,
            stamp: Stamp::of(bytes),
        })
    }
}

/// The SHA-1 of a stored record's bytes: Redis computes the same in its
/// scripts (`redis.sha1hex`), so a compare-and-set sends 20 bytes, not the
/// record. It detects change, nothing more: no one chooses the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp([u8; 20]);

impl Stamp {
    pub fn of(bytes: &[u8]) -> Stamp {
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
        let mut out = [0u8; 20];
        out.copy_from_slice(d.as_ref());
        Stamp(out)
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Done,
    /// The record was no longer the one read: nothing written.
    Conflict,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store file {0} is gone")]
    Lost(String),
    #[error("a stored mailbox record is corrupt")]
    Corrupt,
    #[error("{0}")]
    Backend(String),
}

/// Where mailbox memories live. A backend loads and saves one mailbox's
/// memory as a whole; a save is atomic (all of it or none of it) and a
/// compare-and-set: it writes only if the record is still the one the
/// caller loaded (`expected`, `None` for none), so that instances and
/// operator commands working on one mailbox at once agree on one memory.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Stored>, StateError>;
    async fn save(
        &self,
        mailbox: &MailboxKey,
        memory: &Memory,
        expected: Option<&Stored>,
    ) -> Result<Saved, StateError>;
    /// Drops the mailbox's memory; true if there was one. Its next login
    /// finds nothing and starts afresh, as on first contact.
    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError>;
    /// Whether the store can be used now.
    async fn ping(&self) -> Result<(), StateError>;
}
