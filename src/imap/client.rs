//! The upstream IMAP connection: sends commands, reads responses, and streams
//! message bodies chunk by chunk.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framer::{Frame, FrameError, Framer};
use super::parse::{self, Response, Untagged};
use super::quote::{self, ImapString};
use crate::pop3::Secret;

pub use super::parse::Status;

/// Longest response line we accept; snapshot lines are far shorter.
const MAX_LINE: usize = 64 * 1024;
/// Largest response we assemble in memory (bodies are streamed instead).
const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("upstream I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// A tagged NO or BAD; `code` is the response code if there was one.
    #[error("upstream refused {command}: {text}")]
    Refused {
        command: &'static str,
        status: Status,
        code: Option<String>,
        text: String,
    },
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<parse::ParseError> for ClientError {
    fn from(_: parse::ParseError) -> Self {
        ClientError::Protocol("malformed response".into())
    }
}

impl ClientError {
    /// The IMAP response code of a refusal, upper-cased (e.g. "UNAVAILABLE").
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// True when the server answered at all (as opposed to a broken link).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// What SELECT told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selected {
    pub uid_validity: u32,
    pub exists: u32,
}

/// One message of the login snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub uid: u32,
    pub size: u64,
    pub deleted: bool,
}

/// Events of one message's body within a body fetch, in order: `Begin`,
/// `Chunk`s, `End`; or `Missing` when the server sends no body for it
/// (the message was expunged meanwhile).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEvent {
    Begin(u64),
    Chunk(Bytes),
    End,
    Missing,
}

enum Item {
    Response(BytesMut),
    BodyStart(u64),
    BodyChunk(Bytes),
}

pub struct Client<S> {
    stream: S,
    rbuf: BytesMut,
    framer: Framer,
    /// The response being assembled across literals.
    partial: BytesMut,
    streaming_body: bool,
    /// A body start read ahead of its turn: (its UID if given, length).
    held: Option<(Option<u32>, u64)>,
    /// A body was handed out and its FETCH response is not finished.
    in_body: bool,
    /// The last body fetch whose tagged completion has been read.
    completed: Option<String>,
    next_tag: u32,
    caps: Vec<String>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads the greeting. `timeout` bounds every later read and write.
    pub async fn start(stream: S, timeout: Duration) -> Result<Self, ClientError> {
        let mut c = Client {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            framer: Framer::new(MAX_LINE),
            partial: BytesMut::new(),
            streaming_body: false,
            held: None,
            in_body: false,
            completed: None,
            next_tag: 1,
            caps: Vec::new(),
            timeout,
        };
        let greeting = c.read_response().await?;
        match parse::response(&greeting)? {
            Response::Untagged(Untagged::Status(Status::Ok, text)) => {
                if let Some(caps) = text.capabilities() {
                    c.caps = caps;
                }
            }
            Response::Untagged(Untagged::Status(Status::Bye, text)) => {
                return Err(ClientError::Refused {
                    command: "greeting",
                    status: Status::Bye,
                    code: text
                        .code
                        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase()),
                    text: text.text_lossy(),
                })
            }
            _ => return Err(ClientError::Protocol("unexpected greeting".into())),
        }
        if c.caps.is_empty() {
            let tag = c.send(&[b"CAPABILITY"]).await?;
            c.complete(&tag, "CAPABILITY", |_| {}).await?;
        }
        Ok(c)
    }

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

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Asks for the capabilities again (after STARTTLS they may differ).
    pub async fn refresh_capabilities(&mut self) -> Result<(), ClientError> {
        self.caps.clear();
        let tag = self.send(&[b"CAPABILITY"]).await?;
        self.complete(&tag, "CAPABILITY", |_| {}).await.map(drop)
    }

    pub fn capabilities(&self) -> &[String] {
        &self.caps
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
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
    async fn put_string(
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

    /// SELECTs the mailbox and takes the login snapshot: UID, size and
    /// \Deleted of every message, in mailbox order. Both commands go out in
    /// one write, saving a round trip.
    pub async fn open_mailbox(
        &mut self,
        mailbox: &str,
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
        self.complete(&select_tag, "SELECT", |u| match u {
            Untagged::Exists(n) => sel.exists = *n,
            Untagged::Status(Status::Ok, t) if t.code_is("UIDVALIDITY") => {
                sel.uid_validity = t
                    .code_args
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
            }
            _ => {}
        })
        .await?;
        if sel.uid_validity == 0 {
            return Err(ClientError::Protocol("SELECT gave no UIDVALIDITY".into()));
        }
        if !pipelined {
            if sel.exists == 0 {
                return Ok((sel, Vec::new()));
            }
            self.write_raw(&[fetch_tag.as_bytes(), SNAPSHOT]).await?;
        }

        let mut out = Vec::with_capacity(sel.exists as usize);
        let mut bad = false;
        let listed = self
            .complete(&fetch_tag, "UID FETCH", |u| {
                if let Untagged::Fetch(f) = u {
                    match (f.uid, f.size) {
                        (Some(uid), Some(size)) => out.push(Listing {
                            uid,
                            size,
                            deleted: f.deleted,
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

    /// Starts fetching a body section (e.g. `BODY.PEEK[]`) of the UIDs in
    /// `uids` (ascending). Read each message's body in that order with
    /// [`Client::body_event`]; the server answers in mailbox order.
    pub async fn fetch_bodies(&mut self, uids: &str, section: &str) -> Result<String, ClientError> {
        // UID first, so each body can be matched to its message.
        self.send(&[format!("UID FETCH {uids} (UID {section})").as_bytes()])
            .await
    }

    /// The next event of message `uid`'s body within the fetch `tag`.
    pub async fn body_event(&mut self, tag: &str, uid: u32) -> Result<BodyEvent, ClientError> {
        loop {
            if !self.in_body {
                if let Some((held_uid, len)) = self.held {
                    if held_uid.is_some_and(|u| u != uid) {
                        // A later message's body is next: this one has none.
                        return Ok(BodyEvent::Missing);
                    }
                    self.held = None;
                    self.in_body = true;
                    return Ok(BodyEvent::Begin(len));
                }
                if self.completed.as_deref() == Some(tag) {
                    return Ok(BodyEvent::Missing);
                }
            }
            match self.read_item(true).await? {
                Item::BodyStart(_) if self.in_body => {
                    // A second body in the same response: not asked for.
                    self.skip_body().await?;
                    self.in_body = false;
                    return Ok(BodyEvent::End);
                }
                Item::BodyStart(len) => self.held = Some((fetch_uid(&self.partial), len)),
                Item::BodyChunk(data) => return Ok(BodyEvent::Chunk(data)),
                Item::Response(_) if self.in_body => {
                    // The rest of the FETCH response that carried the body.
                    self.in_body = false;
                    return Ok(BodyEvent::End);
                }
                // Unsolicited data and an earlier fetch's completion (its
                // bodies were all read) pass; ours ends the batch.
                Item::Response(raw) => {
                    if self.is_done(&raw, tag, "UID FETCH")? {
                        self.completed = Some(tag.to_string());
                    }
                }
            }
        }
    }

    /// Reads through the end of the FETCH response whose body literal just
    /// started, dropping the body.
    async fn skip_body(&mut self) -> Result<(), ClientError> {
        loop {
            if let Item::Response(_) = self.read_item(true).await? {
                return Ok(());
            }
        }
    }

    /// Drops a body start read ahead that no message claimed.
    pub async fn discard_held(&mut self) -> Result<(), ClientError> {
        if self.held.take().is_some() {
            self.skip_body().await?;
        }
        Ok(())
    }

    /// Runs `UID STORE set +FLAGS.SILENT (flag)`.
    pub async fn add_flag(&mut self, uids: &str, flag: &str) -> Result<(), ClientError> {
        let tag = self
            .send(&[format!("UID STORE {uids} +FLAGS.SILENT ({flag})").as_bytes()])
            .await?;
        self.complete(&tag, "UID STORE", |_| {}).await.map(drop)
    }

    pub async fn uid_expunge(&mut self, uids: &str) -> Result<(), ClientError> {
        let tag = self
            .send(&[format!("UID EXPUNGE {uids}").as_bytes()])
            .await?;
        self.complete(&tag, "UID EXPUNGE", |_| {}).await.map(drop)
    }

    /// UIDs of all messages currently flagged \Deleted.
    pub async fn search_deleted(&mut self) -> Result<Vec<u32>, ClientError> {
        let tag = self.send(&[b"UID SEARCH DELETED"]).await?;
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

    /// Says goodbye without waiting long for the answer.
    pub async fn logout(mut self) {
        if self.send(&[b"LOGOUT"]).await.is_ok() {
            self.timeout = self.timeout.min(Duration::from_secs(2));
            while let Ok(raw) = self.read_response().await {
                if !raw.starts_with(b"* ") {
                    break;
                }
            }
        }
    }

    fn tag(&mut self) -> String {
        let tag = format!("A{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    async fn send(&mut self, parts: &[&[u8]]) -> Result<String, ClientError> {
        let tag = self.tag();
        let mut line = Vec::with_capacity(tag.len() + 64);
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        for p in parts {
            line.extend_from_slice(p);
        }
        line.extend_from_slice(b"\r\n");
        let line = Secret(line);
        self.write_raw(&[line.expose()]).await?;
        Ok(tag)
    }

    async fn write_raw(&mut self, parts: &[&[u8]]) -> Result<(), ClientError> {
        let fut = async {
            for p in parts {
                self.stream.write_all(p).await?;
            }
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(ClientError::Io)
    }

    async fn wait_continuation(
        &mut self,
        tag: &str,
        command: &'static str,
    ) -> Result<(), ClientError> {
        loop {
            let raw = self.read_response().await?;
            match parse::response(&raw)? {
                Response::Continuation => return Ok(()),
                Response::Untagged(Untagged::Status(Status::Bye, _)) => {
                    return Err(ClientError::Closed)
                }
                Response::Untagged(_) => {}
                Response::Tagged { tag: t, .. } if t != tag.as_bytes() => {}
                Response::Tagged { .. } => {
                    self.is_done(&raw, tag, command)?;
                    return Err(ClientError::Protocol(format!(
                        "{command} ended without continuation"
                    )));
                }
            }
        }
    }

    /// Reads responses until the tagged completion of `tag`, handing every
    /// untagged one to `on_untagged`. Returns the capabilities if the
    /// completion carried them.
    async fn complete(
        &mut self,
        tag: &str,
        command: &'static str,
        mut on_untagged: impl FnMut(&Untagged<'_>),
    ) -> Result<Option<Vec<String>>, ClientError> {
        loop {
            let raw = self.read_response().await?;
            match parse::response(&raw)? {
                Response::Untagged(Untagged::Status(Status::Bye, _)) => {
                    return Err(ClientError::Closed)
                }
                Response::Untagged(Untagged::Capability(caps)) => self.caps = caps,
                Response::Untagged(u) => on_untagged(&u),
                Response::Continuation => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected continuation during {command}"
                    )))
                }
                Response::Tagged {
                    tag: t,
                    status,
                    text,
                } if t == tag.as_bytes() => {
                    return match status {
                        Status::Ok => Ok(text.capabilities()),
                        _ => Err(refused(command, status, &text)),
                    };
                }
                Response::Tagged { .. } => {}
            }
        }
    }

    /// True if `raw` is the tagged completion of `tag` with OK; an error if
    /// it is its NO/BAD or a BYE; false for anything else.
    fn is_done(
        &mut self,
        raw: &[u8],
        tag: &str,
        command: &'static str,
    ) -> Result<bool, ClientError> {
        match parse::response(raw)? {
            Response::Tagged {
                tag: t,
                status,
                text,
            } if t == tag.as_bytes() => match status {
                Status::Ok => Ok(true),
                _ => Err(refused(command, status, &text)),
            },
            Response::Untagged(Untagged::Status(Status::Bye, _)) => Err(ClientError::Closed),
            _ => Ok(false),
        }
    }

    async fn read_response(&mut self) -> Result<BytesMut, ClientError> {
        match self.read_item(false).await? {
            Item::Response(raw) => Ok(raw),
            _ => unreachable!("bodies are only streamed on request"),
        }
    }

    /// The next whole response, or with `stream_bodies` the pieces of a
    /// `BODY[...]` literal as they arrive (the response around it follows
    /// with `NIL` in the literal's place).
    async fn read_item(&mut self, stream_bodies: bool) -> Result<Item, ClientError> {
        loop {
            let frame = match self.framer.next(&mut self.rbuf)? {
                Some(f) => f,
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            match frame {
                Frame::Line {
                    text,
                    literal,
                    continued,
                } => {
                    if !continued {
                        self.partial.clear();
                    }
                    self.partial.extend_from_slice(&text);
                    let Some(len) = literal else {
                        return Ok(Item::Response(std::mem::take(&mut self.partial)));
                    };
                    if stream_bodies && is_body_literal(&self.partial) {
                        let open =
                            memchr::memrchr(b'{', &self.partial).unwrap_or(self.partial.len());
                        self.partial.truncate(open);
                        self.partial.extend_from_slice(b"NIL");
                        self.streaming_body = len > 0;
                        return Ok(Item::BodyStart(len));
                    }
                    if self.partial.len() as u64 + len > MAX_RESPONSE as u64 {
                        return Err(ClientError::Protocol("response too large".into()));
                    }
                    self.partial.extend_from_slice(b"\r\n");
                }
                Frame::Literal { data, remaining } => {
                    if self.streaming_body {
                        self.streaming_body = remaining > 0;
                        return Ok(Item::BodyChunk(data));
                    }
                    self.partial.extend_from_slice(&data);
                }
            }
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}

fn refused(command: &'static str, status: Status, text: &parse::StatusText<'_>) -> ClientError {
    ClientError::Refused {
        command,
        status,
        code: text
            .code
            .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase()),
        text: text.text_lossy(),
    }
}

/// The UID in a FETCH response prefix (`* 3 FETCH (UID 7 BODY[] NIL`), if
/// it came before the body.
fn fetch_uid(partial: &[u8]) -> Option<u32> {
    let at = memchr::memmem::find(partial, b"(UID ")
        .or_else(|| memchr::memmem::find(partial, b" UID "))?;
    let digits = &partial[at + 5..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Does this response prefix end in a `BODY[...]` (or `BODY[...]<n>`) value
/// announced as a literal?
fn is_body_literal(partial: &[u8]) -> bool {
    if !partial.starts_with(b"* ") {
        return false;
    }
    let Some(open) = memchr::memrchr(b'{', partial) else {
        return false;
    };
    let before = partial[..open]
        .strip_suffix(b" ")
        .unwrap_or(&partial[..open]);
    let Some(start) = memchr::memmem::rfind(before, b"BODY[") else {
        return false;
    };
    let value = &before[start..];
    let close = memchr::memrchr(b']', value).unwrap_or(0);
    close > 0 && (close == value.len() - 1 || value[close + 1..].starts_with(b"<"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    /// A scripted server: for each step, the command line it expects (a
    /// prefix) and what it answers.
    async fn serve(
        stream: DuplexStream,
        greeting: &'static [u8],
        script: Vec<(&'static str, &'static [u8])>,
    ) {
        let mut s = BufReader::new(stream);
        s.write_all(greeting).await.unwrap();
        for (expect, answer) in script {
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            assert!(
                line.starts_with(expect),
                "expected {expect:?}, got {line:?}"
            );
            s.write_all(answer).await.unwrap();
        }
    }

    fn pair(greeting: &'static [u8], script: Vec<(&'static str, &'static [u8])>) -> DuplexStream {
        // A small pipe so responses arrive in pieces; still large enough
        // for a command line, as kernel socket buffers are.
        let (ours, theirs) = tokio::io::duplex(64);
        tokio::spawn(serve(theirs, greeting, script));
        ours
    }

    /// A message's body from a body fetch: (announced length, octets), or
    /// no octets when the server had none for it.
    async fn read_body(
        c: &mut Client<DuplexStream>,
        tag: &str,
        uid: u32,
    ) -> (Option<u64>, Option<Vec<u8>>) {
        let (mut began, mut body) = (None, Vec::new());
        loop {
            match c.body_event(tag, uid).await.unwrap() {
                BodyEvent::Begin(n) => began = Some(n),
                BodyEvent::Chunk(b) => body.extend_from_slice(&b),
                BodyEvent::End => return (began, Some(body)),
                BodyEvent::Missing => return (began, None),
            }
        }
    }

    const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n";

    #[tokio::test]
    async fn session_tolerates_unsolicited_responses_everywhere() {
        let stream = pair(
            GREETING,
            vec![
                ("A1 AUTHENTICATE PLAIN AHUAcCB3", b"* 9 EXISTS\r\nA1 OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n"),
                // SELECT and the snapshot FETCH arrive in one write; the
                // scripted server reads the second line before answering.
                ("A2 SELECT \"INBOX\"", b""),
                (
                    "A3 UID FETCH 1:* (UID RFC822.SIZE FLAGS)",
                    b"* FLAGS (\\Seen)\r\n* 2 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* 1 FETCH (FLAGS (\\Seen))\r\nA2 OK [READ-WRITE] done\r\n\
* 1 FETCH (UID 5 RFC822.SIZE 10 FLAGS ())\r\n* 3 EXISTS\r\n* 2 FETCH (FLAGS (\\Deleted) UID 7 RFC822.SIZE 3)\r\nA3 OK done\r\n",
                ),
                (
                    "A4 UID FETCH 5:6,8 (UID BODY.PEEK[])",
                    b"* 3 EXPUNGE\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 1 FETCH (UID 5 BODY[] {12}\r\n01)\r\n{3}\r\n89 FLAGS ())\r\n\
* 4 FETCH (UID 8 BODY[] {2}\r\nhi)\r\n* 4 EXISTS\r\nA4 OK done\r\n",
                ),
                ("A5 UID FETCH 9 (UID BODY.PEEK[])", b"A5 OK nothing\r\n"),
                ("A6 UID STORE 5 +FLAGS.SILENT (\\Deleted)", b"A6 NO [SERVERBUG] nope\r\n"),
            ],
        );
        let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
        c.login("", "u", &Secret(b"p w".to_vec())).await.unwrap();
        assert!(
            c.has_capability("UIDPLUS"),
            "capabilities from the login completion"
        );
        let (sel, list) = c.open_mailbox("INBOX").await.unwrap();
        assert_eq!(
            sel,
            Selected {
                uid_validity: 42,
                exists: 2
            }
        );
        assert_eq!(
            list,
            vec![
                Listing {
                    uid: 5,
                    size: 10,
                    deleted: false
                },
                Listing {
                    uid: 7,
                    size: 3,
                    deleted: true
                }
            ]
        );

        // One fetch for three messages, the middle one expunged meanwhile.
        let tag = c.fetch_bodies("5:6,8", "BODY.PEEK[]").await.unwrap();
        assert_eq!(
            read_body(&mut c, &tag, 5).await,
            (Some(12), Some(b"01)\r\n{3}\r\n89".to_vec()))
        );
        assert_eq!(
            read_body(&mut c, &tag, 6).await,
            (None, None),
            "expunged: no body"
        );
        assert_eq!(
            read_body(&mut c, &tag, 8).await,
            (Some(2), Some(b"hi".to_vec()))
        );

        let tag = c.fetch_bodies("9", "BODY.PEEK[]").await.unwrap();
        assert_eq!(c.body_event(&tag, 9).await.unwrap(), BodyEvent::Missing);

        let e = c.add_flag("5", "\\Deleted").await.unwrap_err();
        assert!(e.is_refusal() && e.code() == Some("SERVERBUG"), "{e}");
    }

    #[tokio::test]
    async fn login_falls_back_to_login_with_literals() {
        let stream = pair(
            b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
            vec![
                ("A1 LOGIN \"a\\\"b\" {3}", b"+ go\r\n"),
                ("äx", b"A1 OK in\r\n"),
                (
                    "A2 CAPABILITY",
                    b"* CAPABILITY IMAP4rev1 LITERAL+\r\nA2 OK\r\n",
                ),
            ],
        );
        let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
        c.login("", "a\"b", &Secret("äx".as_bytes().to_vec()))
            .await
            .unwrap();
        assert!(c.has_capability("LITERAL+"));
    }

    #[tokio::test]
    async fn bearer_tokens_pass_through_and_errors_are_answered() {
        let stream = pair(
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
            vec![
                (
                    "A1 AUTHENTICATE XOAUTH2 dG9rZW4=",
                    b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n",
                ),
                // RFC 7628: the client answers the error challenge with an
                // empty line, then gets the final NO.
                ("\r\n", b"A1 NO [AUTHENTICATIONFAILED] bad token\r\n"),
                (
                    "A2 AUTHENTICATE XOAUTH2 Z29vZA==",
                    b"A2 OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n",
                ),
            ],
        );
        let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
        let e = c
            .authenticate("XOAUTH2", &Secret(b"dG9rZW4=".to_vec()))
            .await
            .unwrap_err();
        assert!(
            e.is_refusal() && e.code() == Some("AUTHENTICATIONFAILED"),
            "{e}"
        );
        c.authenticate("XOAUTH2", &Secret(b"Z29vZA==".to_vec()))
            .await
            .unwrap();
        assert!(c.has_capability("UIDPLUS"));
    }

    #[tokio::test]
    async fn bye_and_eof_are_errors() {
        let stream = pair(b"* BYE [UNAVAILABLE] go away\r\n", vec![]);
        let e = Client::start(stream, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(e.is_refusal() && e.code() == Some("UNAVAILABLE"), "{e}");

        let stream = pair(
            GREETING,
            vec![("A1 AUTHENTICATE", b"* BYE shutting down\r\n")],
        );
        let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
        let e = c.login("", "u", &Secret(b"p".to_vec())).await.unwrap_err();
        assert!(matches!(e, ClientError::Closed), "{e}");
    }

    #[test]
    fn body_literal_detection() {
        assert!(is_body_literal(b"* 1 FETCH (UID 3 BODY[] {10}"));
        assert!(is_body_literal(b"* 1 FETCH (UID 3 BODY[TEXT]<0> {10}"));
        assert!(is_body_literal(
            b"* 1 FETCH (BODY[HEADER.FIELDS (A B)] {10}"
        ));
        assert!(!is_body_literal(b"* 1 FETCH (UID 3 RFC822.HEADER {10}"));
        assert!(!is_body_literal(b"A1 OK {10}"));
    }
}
