//! Reading responses: whole ones, or a body literal piece by piece.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::bodies::is_body_literal;
use super::{BodyPos, Client, ClientError, Item, MAX_RESPONSE};
use crate::imap::framer::Frame;

/// The least a streamed body piece holds before it is handed on, unless the
/// literal ends sooner.
const MIN_BODY_PIECE: u64 = 4096;

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The next whole response. What is left of a streamed body (its
    /// reader went away mid-message) is read past.
    pub(super) async fn read_response(&mut self) -> Result<BytesMut, ClientError> {
        loop {
            if let Item::Response(raw) = self.read_item(false).await? {
                return Ok(raw);
            }
        }
    }

    /// The next whole response, or with `stream_bodies` the pieces of a
    /// `BODY[...]` literal as they arrive (the response around it follows
    /// with `NIL` in the literal's place).
    ///
    /// The upstream timeout bounds the whole item, not each read, so that a
    /// server trickling a byte at a time cannot hold a session forever; a
    /// body piece is at least `MIN_BODY_PIECE` octets (or the rest of the
    /// literal), so a trickled body is bounded the same way.
    pub(super) async fn read_item(&mut self, stream_bodies: bool) -> Result<Item, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.body == BodyPos::Literal {
                let piece = self.framer.literal_left().min(MIN_BODY_PIECE);
                if (self.rbuf.len() as u64) < piece {
                    self.fill(deadline).await?;
                    continue;
                }
            }
            let frame = match self.framer.next(&mut self.rbuf)? {
                Some(f) => f,
                None => {
                    self.fill(deadline).await?;
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
                        self.body = BodyPos::Outside;
                        return Ok(Item::Response(std::mem::take(&mut self.partial)));
                    };
                    if stream_bodies && is_body_literal(&self.partial) {
                        let open =
                            memchr::memrchr(b'{', &self.partial).unwrap_or(self.partial.len());
                        self.partial.truncate(open);
                        self.partial.extend_from_slice(b"NIL");
                        self.body = if len > 0 {
                            BodyPos::Literal
                        } else {
                            BodyPos::Rest
                        };
                        return Ok(Item::BodyStart(len));
                    }
                    if self.partial.len() as u64 + len > MAX_RESPONSE as u64 {
                        return Err(ClientError::Protocol("response too large".into()));
                    }
                    self.partial.extend_from_slice(b"\r\n");
                }
                Frame::Literal { data, remaining } => {
                    if self.body == BodyPos::Literal {
                        if remaining == 0 {
                            self.body = BodyPos::Rest;
                        }
                        return Ok(Item::BodyChunk(data));
                    }
                    self.partial.extend_from_slice(&data);
                }
            }
        }
    }

    pub(super) async fn fill(&mut self, deadline: Instant) -> Result<(), ClientError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }
}
