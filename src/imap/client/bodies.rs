//! Body fetches: the bodies of a `UID FETCH` answer, streamed chunk by
//! chunk as their literals arrive.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BodyPos, Client, ClientError, Item};

/// A body literal that has begun: its message's UID when the server sent
/// it before the body (we ask for UID first; RFC 3501 fixes no order), and
/// its announced length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyStart {
    pub uid: Option<u32>,
    /// INTERNALDATE (seconds since 1970), when asked for before the body.
    pub date: Option<u32>,
    pub len: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Sends `UID FETCH uids (UID section)` (e.g. `BODY.PEEK[]`) and returns
    /// its tag; read the answer's bodies with [`Client::next_body`].
    pub async fn fetch_bodies(&mut self, uids: &str, section: &str) -> Result<String, ClientError> {
        self.send(&[format!("UID FETCH {uids} (UID {section})").as_bytes()])
            .await
    }

    /// The next body in fetch `tag`'s answer, whatever message it belongs
    /// to; `None` once the tagged OK is read (NO or BAD is an error). Other
    /// responses pass, and a body not read to its end is read past first.
    pub async fn next_body(&mut self, tag: &str) -> Result<Option<BodyStart>, ClientError> {
        self.skip_body().await?;
        loop {
            match self.read_item(true).await? {
                Item::BodyStart(len) => {
                    let uid = fetch_uid(&self.partial);
                    let date = fetch_date(&self.partial);
                    return Ok(Some(BodyStart { uid, date, len }));
                }
                Item::BodyChunk(_) => {}
                Item::Response(raw) => {
                    if self.is_done(&raw, tag, "UID FETCH")? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The next octets of the body [`Client::next_body`] started; `None` at
    /// its end, once the rest of its FETCH response is read as well.
    pub async fn body_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body {
                BodyPos::Outside => return Ok(None),
                BodyPos::Literal => {
                    if let Item::BodyChunk(data) = self.read_item(true).await? {
                        return Ok(Some(data));
                    }
                }
                // A second body in the same response was not asked for.
                BodyPos::Rest => match self.read_item(true).await? {
                    Item::Response(_) => return Ok(None),
                    Item::BodyStart(_) => {
                        while self.body == BodyPos::Literal {
                            self.read_item(true).await?;
                        }
                    }
                    Item::BodyChunk(_) => {}
                },
            }
        }
    }

    /// Reads past the rest of a started body.
    pub async fn skip_body(&mut self) -> Result<(), ClientError> {
        while self.body_chunk().await?.is_some() {}
        Ok(())
    }

    /// True while a body's FETCH response is only partly read.
    pub fn in_body(&self) -> bool {
        self.body != BodyPos::Outside
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

/// The INTERNALDATE in a FETCH response prefix, if it came before the body.
fn fetch_date(partial: &[u8]) -> Option<u32> {
    let at = memchr::memmem::find(partial, b"INTERNALDATE \"")? + 14;
    let len = memchr::memchr(b'"', &partial[at..])?;
    crate::imap::date::internal_date(&partial[at..at + len])
}

/// Does this response prefix end in a `BODY[...]` (or `BODY[...]<n>`) value
/// announced as a literal?
pub(super) fn is_body_literal(partial: &[u8]) -> bool {
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
    use super::{fetch_date, fetch_uid};

    #[test]
    fn uid_and_date_before_the_body() {
        let p = b"* 3 FETCH (UID 7 INTERNALDATE \"02-Dec-2026 05:11:11 +0000\" BODY[HEADER.FIELDS (DATE)] ";
        assert_eq!(fetch_uid(p), Some(7));
        assert_eq!(fetch_date(p), Some(1_796_188_271));
        assert_eq!(fetch_date(b"* 3 FETCH (UID 7 BODY[] "), None);
        assert_eq!(fetch_date(b"* 3 FETCH (INTERNALDATE \"02-Dec"), None);
    }
}
