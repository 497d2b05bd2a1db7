//! The dot-stuffer and the TOP limiter: the same output whatever the
//! chunking, and unstuffing gives back the message with CRLF line ends.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use popgate::pop3::{DotStuffer, TopLimiter};

#[path = "chunks.rs"]
mod chunks;

fn stuff<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut stuffer = DotStuffer::default();
    let mut out = BytesMut::new();
    for piece in pieces {
        stuffer.feed(piece, &mut out);
    }
    stuffer.finish(&mut out);
    out.to_vec()
}

/// What the client should read: every LF preceded by a CR, and a final
/// CRLF unless the message is empty or already ends with a line end.
fn normalized(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 2);
    for (i, &b) in msg.iter().enumerate() {
        if b == b'\n' && (i == 0 || msg[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !msg.is_empty() && !msg.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn unstuffed(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").expect("terminator");
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("every line ends in CRLF");
        let line = &rest[..end];
        assert_ne!(line, b".", "a lone dot inside the body");
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
        rest = &rest[end + 2..];
    }
    out
}

fn top_taken<'a>(lines: u64, pieces: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut limiter = TopLimiter::new(lines);
    let mut taken = 0;
    for piece in pieces {
        let n = limiter.take(piece);
        assert!(n <= piece.len());
        taken += n;
        if limiter.done() {
            break;
        }
        assert_eq!(n, piece.len(), "stopped early without being done");
    }
    taken
}

fuzz_target!(|data: &[u8]| {
    let (seed, msg) = chunks::split(data);
    let whole = stuff(std::iter::once(msg));
    assert_eq!(whole, stuff(chunks::pieces(msg, chunks::sizes(seed))));
    assert_eq!(unstuffed(&whole), normalized(msg));

    let lines = u64::from(seed % 8);
    assert_eq!(
        top_taken(lines, std::iter::once(msg)),
        top_taken(lines, chunks::pieces(msg, chunks::sizes(seed)))
    );
});
