//! The POP3 line reader: the same lines whatever the chunking, no line and
//! no buffer beyond the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use popgate::pop3::{Line, LineReader};

#[path = "chunks.rs"]
mod chunks;

const MAX: usize = 64;

fn lines<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Line> {
    let mut reader = LineReader::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(line) = reader.next_line(&mut buf) {
            out.push(line);
        }
        assert!(buf.len() <= MAX, "buffer grew to {}", buf.len());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (seed, input) = chunks::split(data);
    let whole = lines(std::iter::once(input));
    let chunked = lines(chunks::pieces(input, chunks::sizes(seed)));
    assert_eq!(whole, chunked);
    for line in &whole {
        if let Line::Complete(text) = line {
            assert!(text.len() <= MAX);
            assert!(!text.contains(&b'\n'));
        }
    }
});
