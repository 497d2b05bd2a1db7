//! TRANSACTION and UPDATE states: the maildrop commands, streaming RETR
//! and TOP with batched fetches, and QUIT applying the marks upstream.

use super::*;

impl Session {
    pub(super) async fn transaction(&mut self, cmd: Command) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            unreachable!()
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
            _ => return Ok(self.err(None, "Already logged in.")),
        };
        Ok(match result {
            Ok(()) => Reply::Ok,
            Err(e) => self.err(None, &format!("{e}.")),
        })
    }

    /// RETR (`top` is None) or TOP: streams the message from the upstream
    /// literal through the dot-stuffer into the client socket.
    async fn send_message(&mut self, n: u32, top: Option<u64>) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            unreachable!()
        };
        let (uid, size) = match opened.maildrop.fetchable(n) {
            Ok(found) => found,
            Err(e) => return Ok(self.err(None, &format!("{e}."))),
        };
        // TOP n 0 needs no body at all.
        let section = if top == Some(0) {
            "BODY.PEEK[HEADER]"
        } else {
            "BODY.PEEK[]"
        };
        let ctx = self.ctx.clone();
        let backend = opened.backend.clone();
        let tag = match opened.prefetch.as_mut().and_then(|b| b.claim(n, section)) {
            Some((tag, skipped)) => {
                // The client skipped some of the batch: read past them.
                for uid in skipped {
                    discard(&backend, &mut opened.imap, &tag, uid).await?;
                }
                tag
            }
            None => {
                drain(&backend, &mut opened.imap, opened.prefetch.take()).await?;
                let numbers = opened.maildrop.batch_from(n, batch_budget(section));
                let uids: Vec<u32> = numbers.iter().map(|&(_, uid)| uid).collect();
                let set = uid_sets(&uids, usize::MAX).concat();
                let tag = backend
                    .timed("UID FETCH body", opened.imap.fetch_bodies(&set, section))
                    .await?;
                opened.prefetch = Some(Prefetch {
                    tag: tag.clone(),
                    section,
                    rest: numbers.into_iter().skip(1).collect(),
                });
                tag
            }
        };
        // A pipelining client may still lack the end of the last message
        // while we wait on the upstream: send it first.
        if self.conn.out.len() >= FLUSH_BEFORE_WAIT {
            self.conn.flush().await?;
        }
        let mut stuffer = DotStuffer::default();
        let mut limiter = top.map(TopLimiter::new);
        let mut begun = false;
        loop {
            let event = match opened.imap.body_event(&tag, uid).await {
                Ok(event) => event,
                Err(e) if e.is_refusal() && !begun => {
                    warn!(uid, error = %e, "upstream refused the body");
                    return Ok(self.err(None, "Message cannot be read now."));
                }
                Err(e) => {
                    backend.note_failure("UID FETCH body", &e);
                    return Err(e.into());
                }
            };
            match event {
                BodyEvent::Begin(_) => {
                    begun = true;
                    match top {
                        None => response::ok(&mut self.conn.out, &format!("{size} octets")),
                        Some(_) => response::ok(&mut self.conn.out, ""),
                    }
                }
                BodyEvent::Chunk(data) => {
                    let data = match &mut limiter {
                        Some(l) => &data[..l.take(&data)],
                        None => &data[..],
                    };
                    self.counts.bytes += data.len() as u64;
                    ctx.metrics.sent_bytes.inc_by(data.len() as u64);
                    stuffer.feed(data, &mut self.conn.out);
                    self.conn.flush_if_full().await?;
                }
                BodyEvent::End => break,
                BodyEvent::Missing => break,
            }
        }
        if !begun {
            opened.maildrop.mark_gone(n);
            return Ok(self.err(
                None,
                "Message was removed from the mailbox by another client.",
            ));
        }
        stuffer.finish(&mut self.conn.out);
        let command = if top.is_none() {
            opened.maildrop.mark_retrieved(n);
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
    pub(super) async fn quit(&mut self) -> &'static str {
        let State::Transaction(opened) =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            self.ok("Logging out.");
            return "quit";
        };
        let Opened {
            backend,
            mut imap,
            prefetch,
            maildrop,
            user_slot,
            counted,
        } = *opened;
        let mark_seen = self.ctx.config.session.mark_seen;
        let result = match drain(&backend, &mut imap, prefetch).await {
            Ok(()) => update(&backend, &mut imap, &maildrop, mark_seen).await,
            Err(e) => Err(e),
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
                "quit"
            }
            Err(e) => {
                m.quit_failures.inc();
                warn!(error = %e, "could not remove deleted messages at QUIT");
                self.err(
                    Some(RespCode::SysTemp),
                    "Some deleted messages were not removed; try again later.",
                );
                "quit_failed"
            }
        };
        // The client need not wait for the upstream goodbye.
        let _ = self.conn.flush().await;
        imap.logout().await;
        drop(counted);
        outcome
    }
}

/// Reads past the rest of a batch the client did not use, so the upstream
/// connection is in step again.
async fn drain(
    backend: &Backend,
    imap: &mut Imap,
    prefetch: Option<Prefetch>,
) -> Result<(), ClientError> {
    if let Some(p) = prefetch {
        for (_, uid) in p.rest {
            discard(backend, imap, &p.tag, uid).await?;
        }
        imap.discard_held().await?;
    }
    Ok(())
}

/// Reads and drops one message's body.
async fn discard(
    backend: &Backend,
    imap: &mut Imap,
    tag: &str,
    uid: u32,
) -> Result<(), ClientError> {
    loop {
        match imap.body_event(tag, uid).await {
            Ok(BodyEvent::End | BodyEvent::Missing) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.is_refusal() => return Ok(()),
            Err(e) => {
                backend.note_failure("UID FETCH body", &e);
                return Err(e);
            }
        }
    }
}

/// How much a batch may fetch ahead: a few bodies, many headers.
fn batch_budget(section: &str) -> Budget {
    if section == "BODY.PEEK[HEADER]" {
        Budget {
            messages: HEADER_BATCH,
            octets: u64::MAX,
        }
    } else {
        Budget {
            messages: BODY_BATCH,
            octets: BATCH_OCTETS,
        }
    }
}

/// Applies the session's marks upstream: `\Seen` on retrieved messages,
/// then removal of exactly the deleted UIDs. Returns how many were removed.
async fn update(
    backend: &Backend,
    imap: &mut Imap,
    maildrop: &Maildrop,
    mark_seen: bool,
) -> Result<usize, ClientError> {
    if mark_seen {
        for set in uid_sets(&maildrop.retrieved_uids(), MAX_SET_LEN) {
            // Not worth failing QUIT over: the mail itself is unaffected.
            if let Err(e) = backend
                .timed("UID STORE", imap.add_flag(&set, "\\Seen"))
                .await
            {
                if !e.is_refusal() {
                    return Err(e);
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
    for set in &sets {
        backend
            .timed("UID STORE", imap.add_flag(set, "\\Deleted"))
            .await?;
    }
    if imap.has_capability("UIDPLUS") {
        for set in &sets {
            backend.timed("UID EXPUNGE", imap.uid_expunge(set)).await?;
        }
    } else {
        // A bare EXPUNGE would also remove what other clients flagged. Only
        // expunge when every flagged message is one of ours; otherwise leave
        // ours flagged, which hides them from POP3 until the server's own
        // expunge runs.
        let flagged = backend.timed("UID SEARCH", imap.search_deleted()).await?;
        if flagged.iter().all(|uid| deleted.binary_search(uid).is_ok()) {
            backend.timed("EXPUNGE", imap.expunge()).await?;
        } else {
            warn!(
                "upstream lacks UIDPLUS and other messages carry \\Deleted; leaving ours flagged"
            );
        }
    }
    Ok(deleted.len())
}
