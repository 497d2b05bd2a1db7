//! The IMAP side of a migration from another POP3 server: the whole
//! header of every message, hashed once, and the pairing with the old
//! server's messages.

use std::collections::HashMap;

use super::backend::Imap;
use super::maildrop::uid_sets;
use crate::imap::ClientError;
use crate::migration::headers;
use crate::migration::matcher::{self, NewMessage, OldMessage};
use crate::pop3::uidl::UidlTemplate;
use crate::state::{Memory, Print};

/// The mailbox's first memory from the old server's messages: hashes the
/// whole header of every message in `prints` (once, at migration), pairs,
/// and returns the memory with the number of messages paired.
pub(crate) async fn assign(
    imap: &mut Imap,
    old: &[OldMessage],
    prints: &[Print],
    uid_validity: u32,
    template: &UidlTemplate,
) -> Result<(Memory, usize), ClientError> {
    let uids: Vec<u32> = prints.iter().map(|p| p.uid).collect();
    let hashes = header_hashes(imap, &uids).await?;
    let new: Vec<NewMessage> = prints
        .iter()
        .filter_map(|p| {
            hashes.get(&p.uid).map(|&hash| NewMessage {
                uid: p.uid,
                size: p.size,
                hash,
            })
        })
        .collect();
    let pairs = matcher::pair(old, &new);
    Ok(matcher::memory(prints, &pairs, old, uid_validity, template))
}

/// The migration hash of each message's whole header, by UID.
async fn header_hashes(imap: &mut Imap, uids: &[u32]) -> Result<HashMap<u32, u128>, ClientError> {
    let mut out = HashMap::with_capacity(uids.len());
    for set in uid_sets(uids, 900) {
        let tag = imap.fetch_bodies(&set, "BODY.PEEK[HEADER]").await?;
        while let Some(start) = imap.next_body(&tag).await? {
            let mut header = Vec::with_capacity(start.len.min(headers::MAX_HEADER as u64) as usize);
            while let Some(chunk) = imap.body_chunk().await? {
                let room = headers::MAX_HEADER.saturating_sub(header.len());
                header.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if let Some(uid) = start.uid {
                out.insert(uid, headers::hash(&header));
            }
        }
    }
    Ok(out)
}
