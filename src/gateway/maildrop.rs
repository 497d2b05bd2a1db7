//! The maildrop as one POP3 session sees it: the snapshot taken at login,
//! numbered 1..n, and the session's marks. Answers STAT, LIST, UIDL, DELE and
//! RSET without touching the upstream; no I/O.

use std::collections::HashMap;
use std::fmt::Write;

use bytes::{BufMut, BytesMut};

use crate::imap::Listing;
use crate::pop3::response;
use crate::pop3::uidl::UidlTemplate;

const DELETED: u8 = 1;
const RETRIEVED: u8 = 2;
/// Expunged upstream by someone else during this session.
const GONE: u8 = 4;

#[derive(Debug, Clone, Copy)]
struct Message {
    uid: u32,
    marks: u8,
    /// Index into `folders`.
    folder: u16,
    size: u64,
}

/// One folder of the maildrop.
#[derive(Debug)]
struct Folder {
    name: String,
    uid_validity: u32,
    /// UIDLs remembered from before that are not the template's, by UID.
    exceptions: HashMap<u32, String>,
    /// After every UIDL of every folder but the first, so UIDLs stay
    /// unique across folders and a single-folder setup keeps its own.
    suffix: String,
}

#[derive(Debug)]
pub(crate) struct Maildrop {
    folders: Vec<Folder>,
    messages: Vec<Message>,
}

/// How far a batch fetch may reach beyond the message asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) messages: usize,
    /// Octets of the messages after the first.
    pub(crate) octets: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MessageError {
    #[error("No such message")]
    NoSuchMessage,
    #[error("Message is deleted")]
    Deleted,
    #[error("Message was removed from the mailbox by another client")]
    Gone,
}

impl Maildrop {
    /// Builds the snapshot; messages already flagged `\Deleted` upstream are
    /// hidden, as if another client had removed them.
    pub(crate) fn new(uid_validity: u32, listing: &[Listing]) -> Maildrop {
        let messages = listing
            .iter()
            .filter(|l| !l.deleted)
            .map(|l| Message {
                uid: l.uid,
                marks: 0,
                folder: 0,
                size: l.size,
            })
            .collect();
        Maildrop {
            folders: vec![Folder {
                name: String::new(),
                uid_validity,
                exceptions: HashMap::new(),
                suffix: String::new(),
            }],
            messages,
        }
    }

    /// One maildrop of several folders' snapshots, in the order given:
    /// numbered folder after folder, each in UID order.
    pub(crate) fn join(parts: Vec<(String, Maildrop)>) -> Maildrop {
        let mut joined = Maildrop {
            folders: Vec::new(),
            messages: Vec::new(),
        };
        for (i, (name, part)) in parts.into_iter().enumerate() {
            let index = joined.folders.len() as u16;
            let mut folder = part.folders.into_iter().next().unwrap_or(Folder {
                name: String::new(),
                uid_validity: 0,
                exceptions: HashMap::new(),
                suffix: String::new(),
            });
            folder.suffix = if i == 0 {
                String::new()
            } else {
                folder_suffix(&name)
            };
            folder.name = name;
            joined.folders.push(folder);
            joined.messages.extend(
                part.messages
                    .into_iter()
                    .map(|m| Message { folder: index, ..m }),
            );
        }
        joined
    }

    pub(crate) fn folder_count(&self) -> usize {
        self.folders.len()
    }

    pub(crate) fn folder_name(&self, folder: usize) -> &str {
        &self.folders[folder].name
    }

    pub(crate) fn uid_validity(&self, folder: usize) -> u32 {
        self.folders[folder].uid_validity
    }

    /// The folder message `n` is in; `n` must exist.
    pub(crate) fn folder_of(&self, n: u32) -> usize {
        self.messages[n as usize - 1].folder as usize
    }

    /// Keeps only the last `n` messages of the listing (the highest UIDs,
    /// of the last folders); 0 keeps all.
    pub(crate) fn newest(mut self, n: usize) -> Maildrop {
        if n > 0 && self.messages.len() > n {
            self.messages.drain(..self.messages.len() - n);
        }
        self
    }

    pub(crate) fn with_exceptions(mut self, exceptions: HashMap<u32, String>) -> Maildrop {
        self.folders[0].exceptions = exceptions;
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Message)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.marks & DELETED == 0)
            .map(|(i, m)| (i + 1, m))
    }

    /// A message that RETR, TOP, LIST n or UIDL n may use.
    fn get(&self, n: u32) -> Result<&Message, MessageError> {
        let m = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.messages.get(i))
            .ok_or(MessageError::NoSuchMessage)?;
        if m.marks & DELETED != 0 {
            return Err(MessageError::Deleted);
        }
        Ok(m)
    }

    /// UID and size of a message to fetch; gone messages are refused.
    pub(crate) fn fetchable(&self, n: u32) -> Result<(u32, u64), MessageError> {
        let m = self.get(n)?;
        if m.marks & GONE != 0 {
            return Err(MessageError::Gone);
        }
        Ok((m.uid, m.size))
    }

    /// Message `n` and the fetchable ones right after it that fit the
    /// budget, as (number, UID). `n` itself must be fetchable.
    pub(crate) fn batch_from(&self, n: u32, budget: Budget) -> Vec<(u32, u32)> {
        let first = self.messages[n as usize - 1];
        let mut out = vec![(n, first.uid)];
        let mut octets = 0u64;
        for (i, m) in self.messages.iter().enumerate().skip(n as usize) {
            octets = octets.saturating_add(m.size);
            if out.len() >= budget.messages
                || octets > budget.octets
                || m.marks & (DELETED | GONE) != 0
                || m.folder != first.folder
            {
                break;
            }
            out.push((i as u32 + 1, m.uid));
        }
        out
    }

    pub(crate) fn stat(&self, out: &mut BytesMut) {
        let (count, octets) = self
            .live()
            .fold((0usize, 0u64), |(c, o), (_, m)| (c + 1, o + m.size));
        response::ok(out, &format!("{count} {octets}"));
    }

    pub(crate) fn list(&self, n: Option<u32>, out: &mut BytesMut) -> Result<(), MessageError> {
        let count = self.live().count();
        self.answer(n, &format!("{count} messages:"), out, |m, line| {
            let _ = write!(line, "{}", m.size);
        })
    }

    pub(crate) fn uidl(
        &self,
        template: &UidlTemplate,
        n: Option<u32>,
        out: &mut BytesMut,
    ) -> Result<(), MessageError> {
        self.answer(n, "", out, |m, line| {
            let folder = &self.folders[m.folder as usize];
            match folder.exceptions.get(&m.uid) {
                Some(uidl) => line.push_str(uidl),
                None => template.render(m.uid, folder.uid_validity, line),
            }
            line.push_str(&folder.suffix);
        })
    }

    /// LIST and UIDL: one message as "+OK n value", or all as a multi-line
    /// answer under `header` (Dovecot's wording, which clients may show).
    fn answer(
        &self,
        n: Option<u32>,
        header: &str,
        out: &mut BytesMut,
        value: impl Fn(&Message, &mut String),
    ) -> Result<(), MessageError> {
        let mut line = String::with_capacity(32);
        match n {
            Some(n) => {
                let m = self.get(n)?;
                let _ = write!(line, "{n} ");
                value(m, &mut line);
                response::ok(out, &line);
            }
            None => {
                response::ok(out, header);
                for (i, m) in self.live() {
                    line.clear();
                    let _ = write!(line, "{i} ");
                    value(m, &mut line);
                    out.put_slice(line.as_bytes());
                    out.put_slice(b"\r\n");
                }
                response::end_multiline(out);
            }
        }
        Ok(())
    }

    pub(crate) fn delete(&mut self, n: u32) -> Result<(), MessageError> {
        self.get(n)?;
        self.messages[n as usize - 1].marks |= DELETED;
        Ok(())
    }

    pub(crate) fn mark_retrieved(&mut self, n: u32) {
        if let Some(m) = self.messages.get_mut(n as usize - 1) {
            m.marks |= RETRIEVED;
        }
    }

    pub(crate) fn mark_gone(&mut self, n: u32) {
        if let Some(m) = self.messages.get_mut(n as usize - 1) {
            m.marks |= GONE;
        }
    }

    /// RSET: unmarks every message marked deleted.
    pub(crate) fn reset(&mut self) {
        for m in &mut self.messages {
            m.marks &= !DELETED;
        }
    }

    /// The messages of `folder` marked deleted.
    pub(crate) fn deleted_uids(&self, folder: usize) -> Vec<u32> {
        self.uids_where(folder, |m| m.marks & DELETED != 0)
    }

    /// Retrieved, and not deleted unless `deleted_too`: these get `\Seen`
    /// at QUIT.
    pub(crate) fn retrieved_uids(&self, folder: usize, deleted_too: bool) -> Vec<u32> {
        let mask = if deleted_too {
            RETRIEVED
        } else {
            RETRIEVED | DELETED
        };
        self.uids_where(folder, |m| m.marks & mask == RETRIEVED)
    }

    /// Whether QUIT has anything to do in `folder`.
    pub(crate) fn touched(&self, folder: usize) -> bool {
        self.messages
            .iter()
            .any(|m| m.folder as usize == folder && m.marks & (DELETED | RETRIEVED) != 0)
    }

    fn uids_where(&self, folder: usize, keep: impl Fn(&Message) -> bool) -> Vec<u32> {
        self.messages
            .iter()
            .filter(|m| m.folder as usize == folder && keep(m))
            .map(|m| m.uid)
            .collect()
    }
}

/// `.` and eight hex digits of the folder name's FNV-1a hash: short, fit
/// for a UIDL whatever the name holds, and the same at every login.
fn folder_suffix(name: &str) -> String {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!(".{hash:08x}")
}

/// IMAP sequence sets for sorted UIDs (`1:4,7,9:12`), each at most about
/// `max_len` bytes so no command line grows past server limits.
pub(crate) fn uid_sets(uids: &[u32], max_len: usize) -> Vec<String> {
    let mut sets = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        i += 1;
        if cur.len() >= max_len {
            sets.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        let _ = if start == end {
            write!(cur, "{start}")
        } else {
            write!(cur, "{start}:{end}")
        };
    }
    if !cur.is_empty() {
        sets.push(cur);
    }
    sets
}

#[cfg(test)]
#[path = "maildrop_tests.rs"]
mod tests;
