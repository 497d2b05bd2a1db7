//! The body fetch pipeline behind RETR and TOP.
//!
//! One `UID FETCH` covers the requested message and those after it, so the
//! next bodies are on the way while the client reads (every client seen
//! reads in order). One command at a time, because servers interleave the
//! answers of pipelined FETCHes. Bodies are matched by UID whatever their
//! order; a body nobody asked for, or one the client skipped, is read and
//! dropped, so memory stays bounded. A requested body that a batch answer
//! lacks is fetched again on its own before the message is called removed.

use std::collections::VecDeque;

use bytes::Bytes;
use tracing::debug;

use super::backend::{Backend, Imap};
use super::maildrop::{uid_sets, Budget, Maildrop};
use crate::imap::ClientError;

/// How far one body fetch reaches ahead of the message asked for at
/// first: a few bodies up to 1 MiB in all, many headers (TOP n 0 answers
/// are small).
const BODY_BATCH: usize = 16;
const BATCH_OCTETS: u64 = 1024 * 1024;
const HEADER_BATCH: usize = 32;
/// Each batch the client reads to its end reaches twice as far as the one
/// before, up to this many doublings: a client scanning the whole mailbox
/// waits on the server's answer once per hundreds of messages instead of
/// once per 32 (measured: the wait was the gap to the native server on a
/// TOP n 0 scan), while one that reads a message or two, or jumps about,
/// leaves little unread in a batch.
const MAX_DOUBLINGS: u32 = 4;

/// What is fetched of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// The whole message (RETR, TOP n with n > 0).
    Full,
    /// The header only (TOP n 0).
    Header,
}

impl Section {
    fn imap(self) -> &'static str {
        match self {
            Section::Full => "BODY.PEEK[]",
            Section::Header => "BODY.PEEK[HEADER]",
        }
    }

    fn budget(self, doublings: u32) -> Budget {
        match self {
            Section::Full => Budget {
                messages: BODY_BATCH << doublings,
                octets: BATCH_OCTETS,
            },
            Section::Header => Budget {
                messages: HEADER_BATCH << doublings,
                octets: u64::MAX,
            },
        }
    }
}

/// How [`Pipeline::begin`] found a message.
#[derive(Debug)]
pub(crate) enum Found {
    /// Its body is next on the connection: read it with [`Pipeline::chunk`].
    Body,
    /// The server has no body for it: expunged by someone else.
    Missing,
    /// The server refused the fetch (NO/BAD) before its body came.
    Refused(ClientError),
}

/// One fetch in flight.
struct Batch {
    tag: String,
    section: Section,
    /// Requested UIDs whose bodies have not come yet, in request order.
    pending: VecDeque<u32>,
    /// More than one UID was asked for, so a missing body may only be
    /// missing from this answer.
    several: bool,
}

enum State {
    /// No fetch answer is being read.
    Idle,
    /// A fetch answer is being read; the connection is between bodies.
    Between(Batch),
    /// A body of the batch is being handed out chunk by chunk.
    Streaming(Batch),
}

/// Owns the upstream's body fetches for one session.
pub(crate) struct Pipeline {
    state: State,
    /// How many times the batch size has doubled: once for each batch in
    /// a row that the client read to its end.
    doublings: u32,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            state: State::Idle,
            doublings: 0,
        }
    }
}

impl Pipeline {
    /// Makes sure a fetch holding message `n` (UID `uid`) is on its way:
    /// the batch in flight, or a new one sent now.
    pub(crate) async fn request(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
        maildrop: &Maildrop,
        n: u32,
        uid: u32,
        section: Section,
    ) -> Result<(), ClientError> {
        let covered = matches!(&self.state,
            State::Between(b) if b.section == section && b.pending.contains(&uid));
        if !covered {
            let read_whole = matches!(&self.state,
                State::Between(b) if b.section == section && b.pending.is_empty());
            self.doublings = if read_whole {
                (self.doublings + 1).min(MAX_DOUBLINGS)
            } else {
                0
            };
            self.drain(backend, imap).await?;
            let uids = maildrop.batch_from(n, section.budget(self.doublings));
            self.send(backend, imap, uids.into_iter().map(|(_, u)| u), section)
                .await?;
        }
        Ok(())
    }

    /// Makes `uid`'s body, requested with [`Pipeline::request`], the next
    /// on the connection.
    pub(crate) async fn begin(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
        uid: u32,
        section: Section,
    ) -> Result<Found, ClientError> {
        loop {
            let several = match self.find(backend, imap, uid).await? {
                Ok(()) => return Ok(Found::Body),
                Err(Gap::Refused(e)) => return Ok(Found::Refused(e)),
                Err(Gap::Absent { several }) => several,
            };
            if !several {
                return Ok(Found::Missing);
            }
            debug!(uid, "body absent from a batch answer; fetching it alone");
            self.send(backend, imap, [uid].into_iter(), section).await?;
        }
    }

    /// The next octets of the body [`Pipeline::begin`] found; `None` at
    /// its end.
    pub(crate) async fn chunk(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
    ) -> Result<Option<Bytes>, ClientError> {
        let result = imap.body_chunk().await;
        match result {
            Ok(Some(data)) => Ok(Some(data)),
            Ok(None) => {
                if let State::Streaming(b) = std::mem::replace(&mut self.state, State::Idle) {
                    self.state = State::Between(b);
                }
                Ok(None)
            }
            Err(e) => {
                self.state = State::Idle;
                backend.note_failure("UID FETCH body", &e);
                Err(e)
            }
        }
    }

    /// Reads past whatever is left of the fetch in flight, so the
    /// connection is in step for the next command.
    pub(crate) async fn drain(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
    ) -> Result<(), ClientError> {
        let tag = match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => return Ok(()),
            State::Between(b) | State::Streaming(b) => b.tag,
        };
        loop {
            match imap.next_body(&tag).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) if e.is_refusal() => return Ok(()),
                Err(e) => {
                    backend.note_failure("UID FETCH body", &e);
                    return Err(e);
                }
            }
        }
    }

    async fn send(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
        uids: impl Iterator<Item = u32>,
        section: Section,
    ) -> Result<(), ClientError> {
        let mut pending: VecDeque<u32> = uids.collect();
        let set = uid_sets(pending.make_contiguous(), usize::MAX).concat();
        let tag = backend
            .timed("UID FETCH body", imap.fetch_bodies(&set, section.imap()))
            .await?;
        self.state = State::Between(Batch {
            tag,
            section,
            several: pending.len() > 1,
            pending,
        });
        Ok(())
    }

    /// Reads the batch answer up to `uid`'s body, dropping the bodies
    /// before it (skipped by the client, or not asked for at all).
    async fn find(
        &mut self,
        backend: &Backend,
        imap: &mut Imap,
        uid: u32,
    ) -> Result<Result<(), Gap>, ClientError> {
        let State::Between(mut batch) = std::mem::replace(&mut self.state, State::Idle) else {
            return Ok(Err(Gap::Absent { several: false }));
        };
        loop {
            let start = match imap.next_body(&batch.tag).await {
                Ok(Some(start)) => start,
                Ok(None) => {
                    return Ok(Err(Gap::Absent {
                        several: batch.several,
                    }))
                }
                Err(e) if e.is_refusal() => return Ok(Err(Gap::Refused(e))),
                Err(e) => {
                    backend.note_failure("UID FETCH body", &e);
                    return Err(e);
                }
            };
            // Without a UID ahead of the body, it is taken to be the next
            // one asked for: servers answer in mailbox order.
            let Some(got) = start.uid.or(batch.pending.front().copied()) else {
                continue;
            };
            match batch.pending.iter().position(|&u| u == got) {
                Some(i) => {
                    batch.pending.remove(i);
                    if got == uid {
                        self.state = State::Streaming(batch);
                        return Ok(Ok(()));
                    }
                }
                None => debug!(uid = got, "skipping a body that was not asked for"),
            }
        }
    }
}

/// Why a batch answer did not hold a body.
enum Gap {
    Absent { several: bool },
    Refused(ClientError),
}
