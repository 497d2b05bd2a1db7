//! Streaming transforms for multi-line answers: the dot-stuffer (RFC 1939
//! section 3) and the TOP line limiter. Both take the message in chunks of any
//! size and keep only a few bits of state between them.

use bytes::{BufMut, BytesMut};

/// Byte-stuffs a message for a multi-line answer: a leading "." on any line
/// is doubled, bare LF becomes CRLF, and `finish` ends the last line before
/// the terminating ".".
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            prev_cr: false,
        }
    }
}

impl DotStuffer {
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) {
        out.reserve(input.len() + input.len() / 64 + 2);
        while !input.is_empty() {
            if self.at_line_start && input[0] == b'.' {
                out.put_u8(b'.');
            }
            match memchr::memchr(b'\n', input) {
                Some(lf) => {
                    let cr_before = if lf == 0 {
                        self.prev_cr
                    } else {
                        input[lf - 1] == b'\r'
                    };
                    out.put_slice(&input[..lf]);
                    out.put_slice(if cr_before { b"\n" } else { b"\r\n" });
                    self.at_line_start = true;
                    self.prev_cr = false;
                    input = &input[lf + 1..];
                }
                None => {
                    out.put_slice(input);
                    self.at_line_start = false;
                    self.prev_cr = input[input.len() - 1] == b'\r';
                    input = &[];
                }
            }
        }
    }

    /// Ends the current line if it has text, then adds an empty line: the
    /// end of a header that lacked one.
    pub fn end_header(&mut self, out: &mut BytesMut) {
        if !self.at_line_start {
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        self.at_line_start = true;
        self.prev_cr = false;
    }

    /// Completes the answer: a CRLF if the message did not end with one, then
    /// the terminating ".".
    pub fn finish(self, out: &mut BytesMut) {
        if !self.at_line_start {
            out.put_slice(b"\r\n");
        }
        out.put_slice(b".\r\n");
    }
}

/// Decides how much of a message TOP sends: the header, the empty line that
/// ends it, and then `lines` lines of the body.
#[derive(Debug)]
pub struct TopLimiter {
    in_header: bool,
    line_has_text: bool,
    remaining: u64,
}

impl TopLimiter {
    pub fn new(lines: u64) -> Self {
        TopLimiter {
            in_header: true,
            line_has_text: false,
            remaining: lines,
        }
    }

    /// True once the empty line that ends the header has passed.
    pub fn header_ended(&self) -> bool {
        !self.in_header
    }

    /// True once everything TOP wants has passed.
    pub fn done(&self) -> bool {
        !self.in_header && self.remaining == 0
    }

    /// How many leading bytes of `input` belong to the answer.
    pub fn take(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while !self.done() && pos < input.len() {
            if self.in_header {
                let b = input[pos];
                pos += 1;
                match b {
                    b'\n' if !self.line_has_text => self.in_header = false,
                    b'\n' => self.line_has_text = false,
                    b'\r' => {}
                    _ => self.line_has_text = true,
                }
            } else {
                match memchr::memchr(b'\n', &input[pos..]) {
                    Some(lf) => {
                        pos += lf + 1;
                        self.remaining -= 1;
                    }
                    None => pos = input.len(),
                }
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuff(msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = BytesMut::new();
        for piece in msg.chunks(chunk.max(1)) {
            s.feed(piece, &mut out);
        }
        s.finish(&mut out);
        out.to_vec()
    }

    fn top(msg: &[u8], lines: u64, chunk: usize) -> Vec<u8> {
        let mut t = TopLimiter::new(lines);
        let mut out = Vec::new();
        for piece in msg.chunks(chunk.max(1)) {
            let n = t.take(piece);
            out.extend_from_slice(&piece[..n]);
        }
        out
    }

    /// What a client does with a multi-line answer (RFC 1939 section 3).
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn end_header_closes_an_unfinished_header() {
        for (fed, want) in [
            (&b"Subject: x"[..], &b"Subject: x\r\n\r\n.\r\n"[..]),
            (b"Subject: x\r\n", b"Subject: x\r\n\r\n.\r\n"),
        ] {
            let mut s = DotStuffer::default();
            let mut out = BytesMut::new();
            s.feed(fed, &mut out);
            s.end_header(&mut out);
            s.finish(&mut out);
            assert_eq!(&out[..], want, "{:?}", String::from_utf8_lossy(fed));
        }
    }

    #[test]
    fn stuffs_the_first_line_too() {
        assert_eq!(stuff(b".\r\n..x\r\n", 100), b"..\r\n...x\r\n.\r\n");
    }

    #[test]
    fn adds_final_crlf_and_fixes_bare_lf() {
        assert_eq!(stuff(b"a\nb", 1), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(b"a\r\nb\r\n", 1), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(b"", 1), b".\r\n");
    }

    #[test]
    fn top_counts_body_lines_after_the_header() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3";
        assert_eq!(top(msg, 0, 100), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(msg, 1, 3), b"A: 1\r\nB: 2\r\n\r\nl1\r\n");
        assert_eq!(top(msg, 3, 1), msg);
        assert_eq!(top(msg, 99999999, 7), msg);
        assert_eq!(top(b"A: 1\nB: 2", 0, 2), b"A: 1\nB: 2");
    }

    proptest! {
        #[test]
        fn stuffing_round_trips_and_ignores_chunking(
            lines in proptest::collection::vec("[.a-z \r]{0,12}", 0..12),
            final_newline: bool,
            chunk in 1usize..20,
        ) {
            let mut msg = lines.join("\r\n");
            if final_newline { msg.push_str("\r\n"); }
            let wire = stuff(msg.as_bytes(), chunk);
            prop_assert_eq!(&wire, &stuff(msg.as_bytes(), 4096));
            // Every wire line but the terminator that starts with "." is stuffed.
            let body = &wire[..wire.len() - 3];
            for line in body.split(|&b| b == b'\n') {
                prop_assert!(line != b".\r" && line != b".");
            }
            let mut expected = msg.clone().into_bytes();
            if !msg.is_empty() && !msg.ends_with("\r\n") { expected.extend_from_slice(b"\r\n"); }
            prop_assert_eq!(unstuff(&wire), expected);
        }

        #[test]
        fn top_ignores_chunking(msg in "[a-z:\r\n]{0,80}", lines in 0u64..6, chunk in 1usize..20) {
            prop_assert_eq!(top(msg.as_bytes(), lines, chunk), top(msg.as_bytes(), lines, 1000));
        }
    }
}
