//! The UIDL memory: what popgate remembers per mailbox so that a UIDL once
//! given stays that message's UIDL after its UID changes. The session talks
//! to a [`StateStore`]; `embedded` is the on-disk backend.

mod codec;
pub mod embedded;
pub mod matcher;

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
/// memory as a whole; a save is atomic (all of it or none of it).
/// Callers serialise load-compute-save per mailbox.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Memory>, StateError>;
    async fn save(&self, mailbox: &MailboxKey, memory: &Memory) -> Result<(), StateError>;
    /// Drops the mailbox's memory; true if there was one. Its next login
    /// finds nothing and starts afresh, as on first contact.
    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError>;
}
