//! TRANSACTION and UPDATE states: the maildrop commands, streaming RETR
//! and TOP with batched fetches, and QUIT applying the marks upstream.

use tracing::warn;

use super::update::update_all;
use super::{Fault, Pop3Session, Reply, State, FLUSH_BEFORE_WAIT};
use crate::config::{DeleteAction, Workaround};
use crate::gateway::answer::Refusal;
use crate::gateway::fetch::{Found, Section};
use crate::gateway::login::Opened;
use crate::gateway::maildrop::MessageError;
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
            selected,
            ..
        } = &mut **opened;
        // A maildrop of several folders: the message's folder must be the
        // SELECTed one, with the UIDs the snapshot knows.
        let folder = maildrop.folder_of(n);
        if *selected != Some(folder) {
            fetch.drain(backend, imap).await?;
            *selected = None;
            let name = maildrop.folder_name(folder);
            match backend.timed("SELECT", imap.select(name)).await {
                Ok(sel) if sel.uid_validity == maildrop.uid_validity(folder) => {
                    *selected = Some(folder);
                }
                Ok(_) => {
                    *selected = Some(folder);
                    warn!(mailbox = name, "folder renumbered during the session");
                    maildrop.mark_gone(n);
                    return Ok(self.refuse(Refusal::Message(MessageError::Gone)));
                }
                Err(e) if e.is_refusal() => {
                    warn!(mailbox = name, error = %e, "upstream refused SELECT");
                    return Ok(self.refuse(Refusal::CannotRead));
                }
                Err(e) => return Err(e.into()),
            }
        }
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
        let workarounds = &self.ctx.config.client_workarounds;
        let no_nuls = workarounds.contains(&Workaround::OutlookNoNuls);
        let end_header = workarounds.contains(&Workaround::OeNsEoh);
        let mut stuffer = DotStuffer::default();
        let mut limiter = top.map(TopLimiter::new);
        while let Some(data) = fetch.chunk(backend, imap).await? {
            let data = match &mut limiter {
                Some(l) => &data[..l.take(&data)],
                None => &data[..],
            };
            self.counts.bytes += data.len() as u64;
            self.ctx.metrics.sent_bytes.inc_by(data.len() as u64);
            if no_nuls && memchr::memchr(0, data).is_some() {
                stuffer.feed(&without_nuls(data), &mut self.conn.out);
            } else {
                stuffer.feed(data, &mut self.conn.out);
            }
            self.conn.flush_if_full().await?;
        }
        // TOP of a message whose header never ended (no body, no empty line).
        if end_header && limiter.is_some_and(|l| !l.header_ended()) {
            stuffer.end_header(&mut self.conn.out);
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
            selected,
            user_slot,
            counted,
        } = *opened;
        let ctx = self.ctx.clone();
        let result = match fetch.drain(&backend, &mut imap).await {
            Ok(()) => update_all(&backend, &mut imap, &maildrop, selected, &ctx.config).await,
            Err(e) => Err(e.into()),
        };
        let action = ctx.config.delete.action;
        drop(user_slot);
        let m = &self.ctx.metrics;
        let outcome = match result {
            Ok(deleted) => {
                m.messages_deleted.inc_by(deleted as u64);
                self.counts.deleted = deleted;
                self.ok(match action {
                    _ if deleted == 0 => "Logging out.",
                    DeleteAction::Expunge => "Logging out, messages deleted.",
                    DeleteAction::Move => "Logging out, messages moved.",
                    DeleteAction::Flag => "Logging out, messages flagged.",
                });
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

/// Outlook hangs on NUL bytes: they become 0x80, as Dovecot's
/// `outlook-no-nuls` makes them. The length, and so LIST's size, stays.
fn without_nuls(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|&b| if b == 0 { 0x80 } else { b })
        .collect()
}
