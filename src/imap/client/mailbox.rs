//! The mailbox commands: SELECT with the login snapshot, flags, expunges,
//! and LOGOUT.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Client, ClientError};
use crate::imap::parse::{Status, Untagged};
use crate::imap::quote::{self, ImapString};
use crate::imap::{Listing, Selected};

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// SELECTs the mailbox and takes the login snapshot: UID, size and
    /// \Deleted of every message, in mailbox order. Both commands go out in
    /// one write, saving a round trip. Messages carrying the `hidden`
    /// keyword are listed as deleted.
    pub async fn open_mailbox(
        &mut self,
        mailbox: &str,
        hidden: Option<&str>,
    ) -> Result<(Selected, Vec<Listing>), ClientError> {
        const SNAPSHOT: &[u8] = b" UID FETCH 1:* (UID RFC822.SIZE FLAGS)\r\n";
        let select_tag = self.tag();
        let mut line = format!("{select_tag} SELECT ").into_bytes();
        let pipelined = matches!(quote::encode(mailbox.as_bytes()), ImapString::Quoted(_));
        self.put_string(&mut line, &select_tag, mailbox.as_bytes())
            .await?;
        line.extend_from_slice(b"\r\n");
        let fetch_tag = self.tag();
        if pipelined {
            line.extend_from_slice(fetch_tag.as_bytes());
            line.extend_from_slice(SNAPSHOT);
        }
        self.write_raw(&[&line]).await?;

        let mut sel = Selected::default();
        let selected = self.complete(&select_tag, "SELECT", |u| sel.note(u)).await;
        if let Err(e) = selected {
            // The pipelined fetch is answered too (refused, with nothing
            // selected): read its answer so the connection stays in step
            // for a maildrop's next folder.
            if pipelined && e.is_refusal() {
                let _ = self.complete(&fetch_tag, "UID FETCH", |_| {}).await;
            }
            return Err(e);
        }
        if sel.uid_validity == 0 {
            return Err(ClientError::Protocol("SELECT gave no UIDVALIDITY".into()));
        }
        if !pipelined {
            if sel.exists == 0 {
                return Ok((sel, Vec::new()));
            }
            self.write_raw(&[fetch_tag.as_bytes(), SNAPSHOT]).await?;
        }

        // EXISTS is the server's word, not a size we may trust: reserve at
        // most what a large mailbox needs and let the vector grow past it.
        const MOST_RESERVED: usize = 1 << 17;
        let mut out = Vec::with_capacity((sel.exists as usize).min(MOST_RESERVED));
        let mut bad = false;
        let listed = self
            .complete(&fetch_tag, "UID FETCH", |u| {
                if let Untagged::Fetch(f) = u {
                    match (f.uid, f.size) {
                        (Some(uid), Some(size)) => out.push(Listing {
                            uid,
                            size,
                            deleted: f.deleted
                                || hidden.is_some_and(|k| {
                                    f.flags
                                        .split(|&b| b == b' ')
                                        .any(|flag| flag.eq_ignore_ascii_case(k.as_bytes()))
                                }),
                        }),
                        // A flag change pushed by the server carries no size.
                        (_, None) => {}
                        (None, Some(_)) => bad = true,
                    }
                }
            })
            .await;
        match listed {
            Ok(_) => {}
            // Some servers refuse "1:*" on an empty mailbox.
            Err(e) if e.is_refusal() && sel.exists == 0 => return Ok((sel, Vec::new())),
            Err(e) => return Err(e),
        }
        if bad {
            return Err(ClientError::Protocol("FETCH without UID".into()));
        }
        // Servers answer in sequence order, which is UID order; a duplicate
        // would mean an unsolicited FETCH slipped in, so keep the first.
        out.sort_by_key(|l| l.uid);
        out.dedup_by_key(|l| l.uid);
        Ok((sel, out))
    }

    /// SELECTs another folder of the maildrop, for its bodies or its
    /// deletions; the caller compares its UIDVALIDITY with the snapshot's.
    pub async fn select(&mut self, mailbox: &str) -> Result<Selected, ClientError> {
        let tag = self.tag();
        let mut line = format!("{tag} SELECT ").into_bytes();
        self.put_string(&mut line, &tag, mailbox.as_bytes()).await?;
        line.extend_from_slice(b"\r\n");
        self.write_raw(&[&line]).await?;
        let mut sel = Selected::default();
        self.complete(&tag, "SELECT", |u| sel.note(u)).await?;
        Ok(sel)
    }

    /// Runs `UID STORE set +FLAGS.SILENT (flag)`.
    pub async fn add_flag(&mut self, uids: &str, flag: &str) -> Result<(), ClientError> {
        let tag = self
            .send(&[format!("UID STORE {uids} +FLAGS.SILENT ({flag})").as_bytes()])
            .await?;
        self.complete(&tag, "UID STORE", |_| {}).await.map(drop)
    }

    /// Runs `UID STORE set -FLAGS.SILENT (flag)`.
    pub async fn remove_flag(&mut self, uids: &str, flag: &str) -> Result<(), ClientError> {
        let tag = self
            .send(&[format!("UID STORE {uids} -FLAGS.SILENT ({flag})").as_bytes()])
            .await?;
        self.complete(&tag, "UID STORE", |_| {}).await.map(drop)
    }

    pub async fn uid_expunge(&mut self, uids: &str) -> Result<(), ClientError> {
        let tag = self
            .send(&[format!("UID EXPUNGE {uids}").as_bytes()])
            .await?;
        self.complete(&tag, "UID EXPUNGE", |_| {}).await.map(drop)
    }

    /// Runs `UID MOVE set folder` (RFC 6851).
    pub async fn uid_move(&mut self, uids: &str, folder: &str) -> Result<(), ClientError> {
        let head = format!("UID MOVE {uids} ");
        self.with_mailbox(&head, folder, "UID MOVE").await
    }

    /// Runs `UID COPY set folder`.
    pub async fn uid_copy(&mut self, uids: &str, folder: &str) -> Result<(), ClientError> {
        let head = format!("UID COPY {uids} ");
        self.with_mailbox(&head, folder, "UID COPY").await
    }

    /// Runs `CREATE folder`.
    pub async fn create(&mut self, folder: &str) -> Result<(), ClientError> {
        self.with_mailbox("CREATE ", folder, "CREATE").await
    }

    /// A command whose last argument is a mailbox name.
    async fn with_mailbox(
        &mut self,
        head: &str,
        mailbox: &str,
        command: &'static str,
    ) -> Result<(), ClientError> {
        let tag = self.tag();
        let mut line = format!("{tag} {head}").into_bytes();
        self.put_string(&mut line, &tag, mailbox.as_bytes()).await?;
        line.extend_from_slice(b"\r\n");
        self.write_raw(&[&line]).await?;
        self.complete(&tag, command, |_| {}).await.map(drop)
    }

    /// UIDs of all messages currently flagged \Deleted.
    pub async fn search_deleted(&mut self) -> Result<Vec<u32>, ClientError> {
        self.uid_search("DELETED").await
    }

    /// UIDs among `uids` whose INTERNALDATE is before `day` (`2-Dec-2026`).
    pub async fn search_before(&mut self, uids: &str, day: &str) -> Result<Vec<u32>, ClientError> {
        self.uid_search(&format!("UID {uids} BEFORE {day}")).await
    }

    async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ClientError> {
        let tag = self.send(&[b"UID SEARCH ", criteria.as_bytes()]).await?;
        let mut uids = Vec::new();
        // SEARCH results are not modelled by the parser; read them here.
        loop {
            let raw = self.read_response().await?;
            if let Some(rest) = raw.strip_prefix(b"* SEARCH") {
                uids.extend(
                    rest.split(|&b| b == b' ')
                        .filter_map(|w| std::str::from_utf8(w).ok()?.parse::<u32>().ok()),
                );
            } else if self.is_done(&raw, &tag, "UID SEARCH")? {
                return Ok(uids);
            }
        }
    }

    pub async fn expunge(&mut self) -> Result<(), ClientError> {
        let tag = self.send(&[b"EXPUNGE"]).await?;
        self.complete(&tag, "EXPUNGE", |_| {}).await.map(drop)
    }

    /// Says goodbye without waiting long for the answer. In the middle of
    /// a body, the connection is simply dropped: reading the rest of the
    /// body first would cost more than a new connection.
    pub async fn logout(mut self) {
        if self.in_body() {
            return;
        }
        if self.send(&[b"LOGOUT"]).await.is_ok() {
            self.timeout = self.timeout.min(Duration::from_secs(2));
            while let Ok(raw) = self.read_response().await {
                if !raw.starts_with(b"* ") {
                    break;
                }
            }
        }
    }
}

impl Selected {
    /// Takes what SELECT's untagged answers say: EXISTS and UIDVALIDITY.
    fn note(&mut self, u: &Untagged<'_>) {
        match u {
            Untagged::Exists(n) => self.exists = *n,
            Untagged::Status(Status::Ok, t) if t.code_is("UIDVALIDITY") => {
                self.uid_validity = t
                    .code_args
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
}
