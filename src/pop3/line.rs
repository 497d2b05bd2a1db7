//! Splits the client's byte stream into command lines.
//!
//! Lines end in LF (CRLF or a bare LF, as RFC 1939 servers have always
//! tolerated). A line longer than the limit is reported once and then skipped
//! up to its end, so an oversized line can neither grow the buffer nor be
//! mistaken for commands.

use bytes::{Buf, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its line ending.
    Complete(BytesMut),
    /// A line exceeded the limit; its bytes are discarded.
    TooLong,
}

#[derive(Debug)]
pub struct LineReader {
    max_len: usize,
    discarding: bool,
}

impl LineReader {
    pub fn new(max_len: usize) -> Self {
        LineReader {
            max_len,
            discarding: false,
        }
    }

    /// Takes the next line out of `buf`, or `None` when more input is needed.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Option<Line> {
        loop {
            match memchr::memchr(b'\n', buf) {
                Some(pos) if self.discarding => {
                    buf.advance(pos + 1);
                    self.discarding = false;
                }
                Some(pos) if pos > self.max_len => {
                    buf.advance(pos + 1);
                    return Some(Line::TooLong);
                }
                Some(pos) => {
                    let mut line = buf.split_to(pos + 1);
                    line.truncate(pos);
                    if line.last() == Some(&b'\r') {
                        line.truncate(pos - 1);
                    }
                    return Some(Line::Complete(line));
                }
                None if self.discarding => {
                    buf.clear();
                    return None;
                }
                None if buf.len() > self.max_len => {
                    buf.clear();
                    self.discarding = true;
                    return Some(Line::TooLong);
                }
                None => return None,
            }
        }
    }

    /// Forgets any partial state; used when the byte stream changes (STLS).
    pub fn reset(&mut self) {
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(input: &[u8], chunk: usize, max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(line) = reader.next_line(&mut buf) {
                out.push(line);
            }
        }
        out
    }

    fn complete(s: &str) -> Line {
        Line::Complete(BytesMut::from(s))
    }

    #[test]
    fn splits_crlf_and_bare_lf() {
        assert_eq!(
            lines(b"STAT\r\nLIST\nNOOP\r\n", 100, 64),
            vec![complete("STAT"), complete("LIST"), complete("NOOP")]
        );
    }

    #[test]
    fn overlong_line_is_reported_once_and_skipped() {
        let mut input = vec![b'x'; 300];
        input.extend_from_slice(b"\r\nSTAT\r\n");
        for chunk in [1, 7, 64, 1000] {
            assert_eq!(
                lines(&input, chunk, 64),
                vec![Line::TooLong, complete("STAT")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_line_may_fill_the_limit_exactly() {
        assert_eq!(lines(b"12345678\n", 100, 8), vec![complete("12345678")]);
        assert_eq!(lines(b"1234567\r\n", 100, 8), vec![complete("1234567")]);
        assert_eq!(lines(b"123456789\n", 100, 8), vec![Line::TooLong]);
        // Waiting for its end at the limit, too.
        let mut reader = LineReader::new(8);
        let mut buf = BytesMut::from("12345678");
        assert_eq!(reader.next_line(&mut buf), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(reader.next_line(&mut buf), Some(complete("12345678")));
    }

    #[test]
    fn a_reset_forgets_the_overlong_line_being_skipped() {
        // STLS starts a new byte stream: what comes next is a new line.
        let mut reader = LineReader::new(8);
        let mut buf = BytesMut::from("0123456789");
        assert_eq!(reader.next_line(&mut buf), Some(Line::TooLong));
        reader.reset();
        buf.extend_from_slice(b"STAT\r\n");
        assert_eq!(reader.next_line(&mut buf), Some(complete("STAT")));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_lines(
            cmds in proptest::collection::vec("[ -~]{0,40}", 0..20),
            chunk in 1usize..50,
        ) {
            let input: String = cmds.iter().map(|c| format!("{c}\r\n")).collect();
            let expected: Vec<Line> = cmds.iter().map(|c| complete(c)).collect();
            prop_assert_eq!(lines(input.as_bytes(), chunk, 64), expected);
        }

        #[test]
        fn buffer_never_exceeds_the_limit(input in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
            let mut reader = LineReader::new(100);
            let mut buf = BytesMut::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                while reader.next_line(&mut buf).is_some() {}
                prop_assert!(buf.len() <= 100);
            }
        }
    }
}
