//! The stored form of a [`Memory`], kept small: a version byte, the
//! UIDVALIDITY, then the prints as varints (the UID as the gap from the
//! previous one, the size, the date as the zigzag difference from the
//! previous date: mail arrives in date order) and the hash as 8 bytes;
//! then the exceptions, each as the UID gap and the UIDL front- and
//! back-coded against the previous one (after a UIDVALIDITY change every
//! UIDL is an exception, and neighbours such as `0000000a000004d1` and
//! `0000000b000004d1` differ in a byte or two). About 14 bytes per print
//! and 5 per exception of the default UIDL format.

use super::{Memory, Print};

const VERSION: u8 = 2;

pub(super) fn encode(m: &Memory) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + m.prints.len() * 16);
    out.push(VERSION);
    out.extend_from_slice(&m.uid_validity.to_le_bytes());
    varint(&mut out, m.prints.len() as u64);
    let (mut last, mut last_date) = (0u32, 0u32);
    for p in &m.prints {
        varint(&mut out, u64::from(p.uid.wrapping_sub(last)));
        last = p.uid;
        varint(&mut out, p.size);
        varint(&mut out, zigzag(p.date.wrapping_sub(last_date) as i32));
        last_date = p.date;
        out.extend_from_slice(&p.hash.to_le_bytes());
    }
    varint(&mut out, m.exceptions.len() as u64);
    let mut last = 0u32;
    let mut previous: &[u8] = b"";
    for (uid, uidl) in &m.exceptions {
        varint(&mut out, u64::from(uid.wrapping_sub(last)));
        last = *uid;
        let cur = uidl.as_bytes();
        let prefix = common(cur.iter(), previous.iter());
        let suffix = common(cur[prefix..].iter().rev(), previous[prefix..].iter().rev());
        varint(&mut out, prefix as u64);
        varint(&mut out, suffix as u64);
        let middle = &cur[prefix..cur.len() - suffix];
        varint(&mut out, middle.len() as u64);
        out.extend_from_slice(middle);
        previous = cur;
    }
    out
}

pub(super) fn decode(b: &[u8]) -> Option<Memory> {
    let mut r = Reader { b, pos: 0 };
    if r.take(1)? != [VERSION] {
        return None;
    }
    let uid_validity = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let n = r.varint()?;
    let mut prints = Vec::with_capacity(n.min(1 << 20) as usize);
    let (mut uid, mut date) = (0u32, 0u32);
    for _ in 0..n {
        uid = uid.checked_add(u32::try_from(r.varint()?).ok()?)?;
        let size = r.varint()?;
        date = date.wrapping_add(unzigzag(u32::try_from(r.varint()?).ok()?) as u32);
        let hash = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        prints.push(Print {
            uid,
            size,
            date,
            hash,
        });
    }
    let n = r.varint()?;
    let mut exceptions = std::collections::BTreeMap::new();
    let mut uid = 0u32;
    let mut previous = Vec::new();
    for _ in 0..n {
        uid = uid.checked_add(u32::try_from(r.varint()?).ok()?)?;
        let prefix = usize::try_from(r.varint()?).ok()?;
        let suffix = usize::try_from(r.varint()?).ok()?;
        let len = usize::try_from(r.varint()?).ok()?;
        let middle = r.take(len)?;
        let back = previous.len().checked_sub(suffix)?;
        if prefix > back {
            return None;
        }
        let mut cur = Vec::with_capacity(prefix + len + suffix);
        cur.extend_from_slice(&previous[..prefix]);
        cur.extend_from_slice(middle);
        cur.extend_from_slice(&previous[back..]);
        let uidl = std::str::from_utf8(&cur).ok()?;
        exceptions.insert(uid, uidl.to_string());
        previous = cur;
    }
    (r.pos == b.len()).then_some(Memory {
        uid_validity,
        prints,
        exceptions,
    })
}

/// How many leading items the two sequences share.
fn common<'a>(a: impl Iterator<Item = &'a u8>, b: impl Iterator<Item = &'a u8>) -> usize {
    a.zip(b).take_while(|(x, y)| x == y).count()
}

fn zigzag(n: i32) -> u64 {
    u64::from(((n << 1) ^ (n >> 31)) as u32)
}

fn unzigzag(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len())?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(n);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn memory() -> impl Strategy<Value = Memory> {
        (
            any::<u32>(),
            proptest::collection::btree_map(
                1u32..,
                (any::<u64>(), any::<u32>(), any::<u64>()),
                0..50,
            ),
            proptest::collection::btree_map(
                1u32..,
                "[!-~]{1,70}|[0-9a-f]{8}0000[0-9a-f]{4}",
                0..10,
            ),
        )
            .prop_map(|(uid_validity, prints, exceptions)| Memory {
                uid_validity,
                prints: prints
                    .into_iter()
                    .map(|(uid, (size, date, hash))| Print {
                        uid,
                        size,
                        date,
                        hash,
                    })
                    .collect(),
                exceptions,
            })
    }

    proptest! {
        #[test]
        fn round_trips(m in memory()) {
            prop_assert_eq!(decode(&encode(&m)), Some(m));
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }

    #[test]
    fn neighbouring_exceptions_cost_a_few_bytes() {
        let m = |uids: std::ops::Range<u32>| Memory {
            uid_validity: 7,
            prints: Vec::new(),
            exceptions: uids.map(|u| (u, format!("{u:08X}{:08X}", 1234))).collect(),
        };
        let one = encode(&m(1000..1001)).len();
        let many = encode(&m(1000..2000)).len();
        assert!((many - one) / 999 <= 5, "{} bytes each", (many - one) / 999);
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let m = Memory {
            uid_validity: 7,
            prints: vec![Print {
                uid: 3,
                size: 1000,
                date: 1_700_000_000,
                hash: 9,
            }],
            exceptions: [(3, "abc".to_string())].into(),
        };
        let b = encode(&m);
        assert!(decode(&b[..b.len() - 1]).is_none());
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        // Header 6; the print 16 (UID gap 1, size 2, date 5 as the first
        // difference, hash 8); the exception list 7 (count, UID gap,
        // prefix, suffix, length, "abc").
        assert_eq!(b.len(), 6 + 16 + 8);
    }
}
