//! Splits the server's byte stream into lines and literal chunks.
//!
//! An IMAP response is a line that may end in a literal announcement
//! (`{123}`); then 123 octets follow, then the rest of the response as another
//! line. The framer hands literals out in chunks as they arrive, so a message
//! body never has to sit whole in memory.

use bytes::{Bytes, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its CRLF. `literal` is the size of the literal it
    /// announces, if any; `continued` is true for the line that follows a
    /// literal (it belongs to the same response).
    Line {
        text: Bytes,
        literal: Option<u64>,
        continued: bool,
    },
    /// Some octets of the current literal; `remaining` are still to come.
    Literal { data: Bytes, remaining: u64 },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("upstream sent a line longer than {0} bytes")]
    LineTooLong(usize),
}

#[derive(Debug)]
pub struct Framer {
    max_line: usize,
    literal_left: u64,
    continued: bool,
}

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Framer {
            max_line,
            literal_left: 0,
            continued: false,
        }
    }

    /// Takes the next frame out of `buf`, or `None` if more input is needed.
    /// Octets of the current literal not yet framed.
    pub fn literal_left(&self) -> u64 {
        self.literal_left
    }

    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.literal_left > 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf
                .len()
                .min(usize::try_from(self.literal_left).unwrap_or(usize::MAX));
            self.literal_left -= n as u64;
            return Ok(Some(Frame::Literal {
                data: buf.split_to(n).freeze(),
                remaining: self.literal_left,
            }));
        }
        let Some(lf) = memchr::memchr(b'\n', buf) else {
            if buf.len() > self.max_line {
                return Err(FrameError::LineTooLong(self.max_line));
            }
            return Ok(None);
        };
        if lf > self.max_line {
            return Err(FrameError::LineTooLong(self.max_line));
        }
        let mut line = buf.split_to(lf + 1);
        line.truncate(if lf > 0 && line[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        });
        let literal = literal_size(&line);
        let continued = self.continued;
        self.continued = literal.is_some();
        self.literal_left = literal.unwrap_or(0);
        Ok(Some(Frame::Line {
            text: line.freeze(),
            literal,
            continued,
        }))
    }
}

/// The size of a literal announced at the end of a line: `{n}`, or `{n+}` /
/// `{n-}` as RFC 7888 allows servers to echo.
pub fn literal_size(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', body)?;
    let mut digits = &body[open + 1..];
    if let Some(d) = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        digits = d;
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reassembles responses from frames, joining literals inline as on the wire.
    fn responses(input: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut framer = Framer::new(1000);
        let mut buf = BytesMut::new();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(frame) = framer.next(&mut buf).unwrap() {
                match frame {
                    Frame::Line {
                        text, continued, ..
                    } => {
                        if continued {
                            out.last_mut().unwrap().extend_from_slice(&text);
                        } else {
                            out.push(text.to_vec());
                        }
                    }
                    Frame::Literal { data, .. } => out.last_mut().unwrap().extend_from_slice(&data),
                }
            }
        }
        out
    }

    const SAMPLE: &[u8] = b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\n{3}\r\n.\r\n FLAGS (\\Seen))\r\n\
* 2 EXISTS\r\n* OK [UIDVALIDITY 3] \"quoted {5}\"\r\n* 3 FETCH (BODY[] {0}\r\n)\r\nA1 OK done\r\n";

    #[test]
    fn literals_are_not_parsed_as_lines() {
        let expected = vec![
            b"* 1 FETCH (UID 7 BODY[] {12}ab\r\n{3}\r\n.\r\n FLAGS (\\Seen))".to_vec(),
            b"* 2 EXISTS".to_vec(),
            b"* OK [UIDVALIDITY 3] \"quoted {5}\"".to_vec(),
            b"* 3 FETCH (BODY[] {0})".to_vec(),
            b"A1 OK done".to_vec(),
        ];
        for chunk in 1..SAMPLE.len() {
            assert_eq!(responses(SAMPLE, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn literal_sizes() {
        assert_eq!(literal_size(b"x {12}"), Some(12));
        assert_eq!(literal_size(b"x {12+}"), Some(12));
        assert_eq!(literal_size(b"x {}"), None);
        assert_eq!(literal_size(b"x {1a}"), None);
        assert_eq!(literal_size(b"x {99999999999999999999}"), None);
        // Nineteen digits at most, though u64 holds some of twenty.
        assert_eq!(
            literal_size(b"x {1000000000000000000}"),
            Some(10u64.pow(18))
        );
        assert_eq!(literal_size(b"x {10000000000000000000}"), None);
        assert_eq!(literal_size(b"\"a\""), None);
        // Digits only: Rust's integer parser would take a sign.
        assert_eq!(literal_size(b"x {+5}"), None);
    }

    #[test]
    fn overlong_lines_fail() {
        let mut framer = Framer::new(8);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(framer.next(&mut buf), Err(FrameError::LineTooLong(8)));
        // The same line with its end in the same read.
        let mut buf = BytesMut::from(&b"0123456789\r\n"[..]);
        assert_eq!(
            Framer::new(8).next(&mut buf),
            Err(FrameError::LineTooLong(8))
        );
        // Exactly the longest line, its end still to come, waits for more.
        let mut buf = BytesMut::from(&b"01234567"[..]);
        assert_eq!(Framer::new(8).next(&mut buf), Ok(None));
        // ... and is a line once it has.
        let mut buf = BytesMut::from(&b"01234567\n"[..]);
        assert!(matches!(
            Framer::new(8).next(&mut buf),
            Ok(Some(Frame::Line { .. }))
        ));
    }

    proptest! {
        #[test]
        fn literal_bytes_pass_untouched(body in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..40) {
            let mut wire = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(b")\r\nT OK\r\n");
            let got = responses(&wire, chunk);
            let mut expected = format!("* 1 FETCH (BODY[] {{{}}}", body.len()).into_bytes();
            expected.extend_from_slice(&body);
            expected.push(b')');
            prop_assert_eq!(got, vec![expected, b"T OK".to_vec()]);
        }

        /// Arbitrary bytes in pieces of uneven sizes, as a socket delivers
        /// them: frames or an error, never a panic.
        #[test]
        fn never_panics(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..20)) {
            let (mut framer, mut buf) = (Framer::new(100), BytesMut::new());
            for piece in &pieces {
                buf.extend_from_slice(piece);
                while let Ok(Some(_)) = framer.next(&mut buf) {}
            }
        }
    }
}
