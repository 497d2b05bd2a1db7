//! Chunk sizes drawn from the first two input bytes, so that a target can
//! compare a parser fed all at once with the same parser fed piecemeal.

/// Splits off the seed; the rest is the parser's input.
pub fn split(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (1, &[]),
    }
}

/// An endless sequence of chunk sizes between 1 and 64.
pub fn sizes(seed: u16) -> impl Iterator<Item = usize> {
    let mut x = u32::from(seed) | 1;
    std::iter::from_fn(move || {
        // xorshift32: cheap and deterministic.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some((x % 64) as usize + 1)
    })
}

/// `input` in pieces of the given sizes.
pub fn pieces<'a>(
    input: &'a [u8],
    sizes: impl Iterator<Item = usize> + 'a,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = input;
    let mut sizes = sizes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes.next().unwrap_or(usize::MAX).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}
