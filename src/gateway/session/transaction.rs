//! TRANSACTION and UPDATE states: the maildrop commands, streaming RETR
//! and TOP with batched fetches, and QUIT applying the marks upstream.

use tracing::warn;

use super::{Fault, Pop3Session, Reply, State, FLUSH_BEFORE_WAIT, MAX_SET_LEN};
use crate::gateway::answer::Refusal;
use crate::gateway::backend::{Backend, Imap};
use crate::gateway::fetch::{Found, Section};
use crate::gateway::login::Opened;
use crate::gateway::maildrop::MessageError;
use crate::gateway::maildrop::{uid_sets, Maildrop};
use crate::imap::ClientError;
use crate::metrics::Outcome;
use crate::pop3::response;
use crate::pop3::{Command, DotStuffer, TopLimiter};

impl Pop3Session {
    pub(super) async fn transaction(&mut self, cmd: Command) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            return Ok(self.refuse(Refusal::NotLoggedIn));
        };
        let template = &self.ctx.config.uidl_format;
        let out = &mut self.conn.out;
        let result = match cmd {
            Command::Stat => {
                opened.maildrop.stat(out);
                Ok(())
            }
            Command::List(n) => opened.maildrop.list(n, out),
            Command::Uidl(n) => opened.maildrop.uidl(template, n, out),
            Command::Dele(n) => opened
                .maildrop
                .delete(n)
                .map(|()| response::ok(out, "Marked to be deleted.")),
            Command::Rset => {
                opened.maildrop.reset();
                response::ok(out, "");
                Ok(())
            }
            Command::Retr(n) => return self.send_message(n, None).await,
            Command::Top(n, lines) => return self.send_message(n, Some(lines)).await,
            _ => return Ok(self.refuse(Refusal::AlreadyLoggedIn)),
        };
        Ok(match result {
            Ok(()) => Reply::Ok,
            Err(e) => self.refuse(Refusal::Message(e)),
        })
    }

    /// RETR (`top` is None) or TOP: streams the message from the upstream
    /// literal through the dot-stuffer into the client socket.
    async fn send_message(&mut self, n: u32, top: Option<u64>) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            return Ok(self.refuse(Refusal::NotLoggedIn));
        };
        let (uid, size) = match opened.maildrop.fetchable(n) {
            Ok(found) => found,
            Err(e) => return Ok(self.refuse(Refusal::Message(e))),
        };
        // TOP n 0 needs no body at all.
        let section = if top == Some(0) {
            Section::Header
        } else {
            Section::Full
        };
        let Opened {
            backend,
            imap,
            fetch,
            maildrop,
            ..
        } = &mut **opened;
        fetch
            .request(backend, imap, maildrop, n, uid, section)
            .await?;
        // A pipelining client may still lack the end of the last message
        // while we wait on the upstream: send it first.
        if self.conn.out.len() >= FLUSH_BEFORE_WAIT {
            self.conn.flush().await?;
        }
        match fetch.begin(backend, imap, uid, section).await? {
            Found::Body => {}
            Found::Missing => {
                maildrop.mark_gone(n);
                return Ok(self.refuse(Refusal::Message(MessageError::Gone)));
            }
            Found::Refused(e) => {
                warn!(uid, error = %e, "upstream refused the body");
                return Ok(self.refuse(Refusal::CannotRead));
            }
        }
        match top {
            None => response::ok(&mut self.conn.out, &format!("{size} octets")),
            Some(_) => response::ok(&mut self.conn.out, ""),
        }
        let mut stuffer = DotStuffer::default();
        let mut limiter = top.map(TopLimiter::new);
        while let Some(data) = fetch.chunk(backend, imap).await? {
            let data = match &mut limiter {
                Some(l) => &data[..l.take(&data)],
                None => &data[..],
            };
            self.counts.bytes += data.len() as u64;
            self.ctx.metrics.sent_bytes.inc_by(data.len() as u64);
            stuffer.feed(data, &mut self.conn.out);
            self.conn.flush_if_full().await?;
        }
        stuffer.finish(&mut self.conn.out);
        let command = if top.is_none() {
            maildrop.mark_retrieved(n);
            self.counts.retrieved += 1;
            "RETR"
        } else {
            "TOP"
        };
        self.ctx
            .metrics
            .messages_sent
            .with_label_values(&[command])
            .inc();
        Ok(Reply::Ok)
    }

    /// QUIT: in AUTHORIZATION just goodbye; in TRANSACTION the UPDATE state
    /// (RFC 1939 section 6). Not cancelled by shutdown once begun.
    pub(super) async fn quit(&mut self) -> Outcome {
        let State::Transaction(opened) =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            self.ok("Logging out.");
            return Outcome::Quit;
        };
        let Opened {
            backend,
            mut imap,
            mut fetch,
            maildrop,
            user_slot,
            counted,
        } = *opened;
        let mark_seen = self.ctx.config.session.mark_seen;
        let result = match fetch.drain(&backend, &mut imap).await {
            Ok(()) => update(&backend, &mut imap, &maildrop, mark_seen).await,
            Err(e) => Err(e.into()),
        };
        drop(user_slot);
        let m = &self.ctx.metrics;
        let outcome = match result {
            Ok(deleted) => {
                m.messages_deleted.inc_by(deleted as u64);
                self.counts.deleted = deleted;
                if deleted > 0 {
                    self.ok("Logging out, messages deleted.");
                } else {
                    self.ok("Logging out.");
                }
                Outcome::Quit
            }
            Err(e) => {
                m.quit_failures.inc();
                warn!(error = %e, "could not remove deleted messages at QUIT");
                self.refuse(Refusal::NotRemoved);
                Outcome::QuitFailed
            }
        };
        // The client need not wait for the upstream goodbye: the UPDATE is
        // done, so LOGOUT goes on in the background while the session ends.
        let _ = self.conn.flush().await;
        tokio::spawn(async move {
            imap.logout().await;
            drop(counted);
        });
        outcome
    }
}

/// Why QUIT's UPDATE did not remove every deleted message.
#[derive(Debug, thiserror::Error)]
enum UpdateFailure {
    #[error(transparent)]
    Upstream(#[from] ClientError),
    #[error("upstream lacks UIDPLUS and other messages carry \\Deleted")]
    OthersFlagged,
}

/// Applies the session's marks upstream: `\Seen` on retrieved messages,
/// then removal of exactly the deleted UIDs. Returns how many were removed.
/// When removal fails, our `\Deleted` flags are taken back, so the next
/// session sees those messages and can delete them again.
async fn update(
    backend: &Backend,
    imap: &mut Imap,
    maildrop: &Maildrop,
    mark_seen: bool,
) -> Result<usize, UpdateFailure> {
    if mark_seen {
        for set in uid_sets(&maildrop.retrieved_uids(), MAX_SET_LEN) {
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
    let deleted = maildrop.deleted_uids();
    if deleted.is_empty() {
        return Ok(0);
    }
    let sets = uid_sets(&deleted, MAX_SET_LEN);
    let removed = remove(backend, imap, &deleted, &sets).await;
    if removed.is_err() {
        unflag(backend, imap, &sets).await;
    }
    removed.map(|()| deleted.len())
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

/// Takes our `\Deleted` flags back after a failed removal. If the link is
/// gone this cannot be done; the flagged messages then stay hidden from
/// POP3 until the server expunges them.
async fn unflag(backend: &Backend, imap: &mut Imap, sets: &[String]) {
    for set in sets {
        let undone = imap.remove_flag(set, "\\Deleted");
        if let Err(e) = backend.timed("UID STORE", undone).await {
            warn!(error = %e, "could not take back \\Deleted after a failed removal");
            if !e.is_refusal() {
                return;
            }
        }
    }
}
