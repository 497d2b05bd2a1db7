//! The upstream IMAP connection: sends commands, reads responses, and streams
//! message bodies chunk by chunk.

mod bodies;
#[cfg(test)]
mod body_tests;
mod login;
#[cfg(test)]
mod login_tests;
mod mailbox;
mod reader;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::framer::{FrameError, Framer};
use super::parse::{self, Response, Untagged};
use crate::secret::Secret;

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

/// The reader's place relative to a streamed body literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyPos {
    /// Between responses, or in one without a streamed body.
    Outside,
    /// Inside a body literal: the next frames are its octets.
    Literal,
    /// The literal is over; the rest of its FETCH response follows.
    Rest,
}

pub(super) enum Item {
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
    /// Where the reader is relative to a streamed body.
    body: BodyPos,
    next_tag: u32,
    caps: Vec<String>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads the greeting. `timeout` bounds every response as a whole (the
    /// greeting too), every body piece and every write.
    pub async fn start(stream: S, timeout: Duration) -> Result<Self, ClientError> {
        let mut c = Client {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            framer: Framer::new(MAX_LINE),
            partial: BytesMut::new(),
            body: BodyPos::Outside,
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

    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn capabilities(&self) -> &[String] {
        &self.caps
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    pub(super) fn tag(&mut self) -> String {
        let tag = format!("A{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    pub(super) async fn send(&mut self, parts: &[&[u8]]) -> Result<String, ClientError> {
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

    pub(super) async fn write_raw(&mut self, parts: &[&[u8]]) -> Result<(), ClientError> {
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

    pub(super) async fn wait_continuation(
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
    pub(super) async fn complete(
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
    pub(super) fn is_done(
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
}

pub(super) fn refused(
    command: &'static str,
    status: Status,
    text: &parse::StatusText<'_>,
) -> ClientError {
    ClientError::Refused {
        command,
        status,
        code: text
            .code
            .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase()),
        text: text.text_lossy(),
    }
}
