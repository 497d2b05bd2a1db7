//! Logging in: STARTTLS, LOGIN and AUTHENTICATE, capabilities, IMAP ID.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{refused, Client, ClientError};
use crate::imap::parse::{self, Response, Status, Untagged};
use crate::imap::quote::{self, ImapString};
use crate::secret::Secret;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends STARTTLS and waits for its OK. The caller then upgrades the
    /// stream through [`Client::stream_mut`] and calls
    /// [`Client::refresh_capabilities`].
    pub async fn starttls(&mut self) -> Result<(), ClientError> {
        if !self.has_capability("STARTTLS") {
            return Err(ClientError::Protocol(
                "upstream does not offer STARTTLS".into(),
            ));
        }
        let tag = self.send(&[b"STARTTLS"]).await?;
        self.complete(&tag, "STARTTLS", |_| {}).await?;
        // Anything already buffered was sent in the clear before the
        // handshake and must not be taken as part of the TLS session.
        if !self.rbuf.is_empty() {
            return Err(ClientError::Protocol("data after STARTTLS".into()));
        }
        Ok(())
    }

    /// Asks for the capabilities again (after STARTTLS they may differ).
    pub async fn refresh_capabilities(&mut self) -> Result<(), ClientError> {
        self.caps.clear();
        let tag = self.send(&[b"CAPABILITY"]).await?;
        self.complete(&tag, "CAPABILITY", |_| {}).await.map(drop)
    }

    /// Logs in as `user` (or as `authcid` acting for `authzid` when the latter
    /// is not empty). Prefers AUTHENTICATE PLAIN, which carries any bytes;
    /// falls back to LOGIN with quoted strings or literals.
    pub async fn login(
        &mut self,
        authzid: &str,
        user: &str,
        password: &Secret,
    ) -> Result<(), ClientError> {
        let tag;
        if self.has_capability("AUTH=PLAIN") {
            let mut raw =
                Vec::with_capacity(authzid.len() + user.len() + password.expose().len() + 2);
            raw.extend_from_slice(authzid.as_bytes());
            raw.push(0);
            raw.extend_from_slice(user.as_bytes());
            raw.push(0);
            raw.extend_from_slice(password.expose());
            let payload = Secret(B64.encode(&raw).into_bytes());
            drop(Secret(raw));
            if self.has_capability("SASL-IR") {
                tag = self
                    .send(&[b"AUTHENTICATE PLAIN ", payload.expose()])
                    .await?;
            } else {
                tag = self.send(&[b"AUTHENTICATE PLAIN"]).await?;
                self.wait_continuation(&tag, "AUTHENTICATE").await?;
                self.write_raw(&[payload.expose(), b"\r\n"]).await?;
            }
        } else if !authzid.is_empty() && authzid != user {
            return Err(ClientError::Protocol(
                "upstream offers no AUTHENTICATE PLAIN for a proxy login".into(),
            ));
        } else if self.has_capability("LOGINDISABLED") {
            return Err(ClientError::Protocol(
                "upstream refuses LOGIN (LOGINDISABLED)".into(),
            ));
        } else {
            tag = self.tag();
            let mut line = Vec::from(format!("{tag} LOGIN ").as_bytes());
            // Both arguments are secrets in a sense (the name is personal
            // data); neither is ever logged.
            self.put_string(&mut line, &tag, user.as_bytes()).await?;
            line.push(b' ');
            self.put_string(&mut line, &tag, password.expose()).await?;
            line.extend_from_slice(b"\r\n");
            let line = Secret(line);
            self.write_raw(&[line.expose()]).await?;
        }
        match self.complete(&tag, "login", |_| {}).await? {
            Some(c) => self.caps = c,
            None => {
                let tag = self.send(&[b"CAPABILITY"]).await?;
                self.complete(&tag, "CAPABILITY", |_| {}).await?;
            }
        }
        Ok(())
    }

    /// AUTHENTICATE with a mechanism popgate does not interpret (XOAUTH2,
    /// OAUTHBEARER): the client's base64 response goes through unchanged. A
    /// failing server may send an error as a challenge first; the empty
    /// answer RFC 7628 prescribes then gets the final NO.
    pub async fn authenticate(
        &mut self,
        mechanism: &str,
        response: &Secret,
    ) -> Result<(), ClientError> {
        let mech = mechanism.as_bytes();
        let tag = if self.has_capability("SASL-IR") {
            self.send(&[b"AUTHENTICATE ", mech, b" ", response.expose()])
                .await?
        } else {
            let tag = self.send(&[b"AUTHENTICATE ", mech]).await?;
            self.wait_continuation(&tag, "AUTHENTICATE").await?;
            self.write_raw(&[response.expose(), b"\r\n"]).await?;
            tag
        };
        loop {
            let raw = self.read_response().await?;
            match parse::response(&raw)? {
                Response::Continuation => self.write_raw(&[b"\r\n"]).await?,
                Response::Untagged(Untagged::Status(Status::Bye, _)) => {
                    return Err(ClientError::Closed)
                }
                Response::Untagged(Untagged::Capability(caps)) => self.caps = caps,
                Response::Untagged(_) => {}
                Response::Tagged {
                    tag: t,
                    status,
                    text,
                } if t == tag.as_bytes() => {
                    if status != Status::Ok {
                        return Err(refused("login", status, &text));
                    }
                    match text.capabilities() {
                        Some(c) => self.caps = c,
                        None => self.refresh_capabilities().await?,
                    }
                    return Ok(());
                }
                Response::Tagged { .. } => {}
            }
        }
    }

    /// Appends an IMAP string to a command being built. Literals that need a
    /// continuation flush the line so far and wait for the server's "+".
    pub(super) async fn put_string(
        &mut self,
        line: &mut Vec<u8>,
        tag: &str,
        value: &[u8],
    ) -> Result<(), ClientError> {
        match quote::encode(value) {
            ImapString::Quoted(q) => line.extend_from_slice(&q),
            ImapString::Literal(bytes) => {
                if self.has_capability("LITERAL+") {
                    line.extend_from_slice(format!("{{{}+}}\r\n", bytes.len()).as_bytes());
                } else {
                    line.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                    let head = Secret(std::mem::take(line));
                    self.write_raw(&[head.expose()]).await?;
                    self.wait_continuation(tag, "LOGIN").await?;
                }
                line.extend_from_slice(&bytes);
                drop(Secret(bytes));
            }
        }
        Ok(())
    }

    /// Sends IMAP ID (RFC 2971) with the given fields without waiting for
    /// the answer; values are quoted, so only printable ASCII is accepted.
    pub async fn id(&mut self, fields: &[(&str, String)]) -> Result<(), ClientError> {
        let mut line = b"ID (".to_vec();
        for (i, (key, value)) in fields.iter().enumerate() {
            for (j, part) in [key.as_bytes(), value.as_bytes()].into_iter().enumerate() {
                match quote::encode(part) {
                    ImapString::Quoted(q) => {
                        if i + j > 0 {
                            line.push(b' ');
                        }
                        line.extend_from_slice(&q);
                    }
                    ImapString::Literal(_) => {
                        return Err(ClientError::Protocol("ID value not printable".into()))
                    }
                }
            }
        }
        line.push(b')');
        // Not waited for: its answer arrives ahead of the next command's,
        // which `complete` skips over as a foreign tag.
        self.send(&[&line]).await.map(drop)
    }
}
