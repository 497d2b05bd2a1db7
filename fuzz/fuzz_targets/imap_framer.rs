//! The IMAP framer: the same lines and literal octets whatever the
//! chunking, literals exactly as long as announced, lines within the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use popgate::imap::framer::{literal_size, Frame, Framer};

#[path = "chunks.rs"]
mod chunks;

const MAX_LINE: usize = 256;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line {
        text: Vec<u8>,
        literal: Option<u64>,
        continued: bool,
    },
    Literal(Vec<u8>),
    Error,
}

fn frames<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut framer = Framer::new(MAX_LINE);
    let mut buf = BytesMut::new();
    let mut out: Vec<Event> = Vec::new();
    let mut announced: Option<u64> = None;
    let mut got = 0u64;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&mut buf) {
                Ok(None) => break,
                Err(_) => {
                    out.push(Event::Error);
                    return out;
                }
                Ok(Some(Frame::Line {
                    text,
                    literal,
                    continued,
                })) => {
                    if let Some(n) = announced.take() {
                        assert_eq!(got, n, "literal cut short");
                    }
                    assert!(text.len() <= MAX_LINE);
                    assert_eq!(literal, literal_size(&text));
                    if literal.is_some_and(|n| n > 0) {
                        announced = literal;
                        got = 0;
                    }
                    out.push(Event::Line {
                        text: text.to_vec(),
                        literal,
                        continued,
                    });
                }
                Ok(Some(Frame::Literal { data, remaining })) => {
                    let n = announced.expect("literal octets without an announcement");
                    assert!(!data.is_empty());
                    got += data.len() as u64;
                    assert_eq!(got + remaining, n);
                    if remaining == 0 {
                        announced = None;
                    }
                    match out.last_mut() {
                        Some(Event::Literal(acc)) => acc.extend_from_slice(&data),
                        _ => out.push(Event::Literal(data.to_vec())),
                    }
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (seed, input) = chunks::split(data);
    let whole = frames(std::iter::once(input));
    let chunked = frames(chunks::pieces(input, chunks::sizes(seed)));
    assert_eq!(whole, chunked);
});
