//! The stored form of a [`Memory`], kept small: a version byte, the
//! UIDVALIDITY, then the prints as varints (the UID as the gap from the
//! previous one, the size), the date as 4 bytes and the hash as 8; then the
//! exceptions (UID gap, length, bytes). About 15 bytes per message.

use super::{Memory, Print};

const VERSION: u8 = 1;

pub(super) fn encode(m: &Memory) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + m.prints.len() * 16);
    out.push(VERSION);
    out.extend_from_slice(&m.uid_validity.to_le_bytes());
    varint(&mut out, m.prints.len() as u64);
    let mut last = 0u32;
    for p in &m.prints {
        varint(&mut out, u64::from(p.uid.wrapping_sub(last)));
        last = p.uid;
        varint(&mut out, p.size);
        out.extend_from_slice(&p.date.to_le_bytes());
        out.extend_from_slice(&p.hash.to_le_bytes());
    }
    varint(&mut out, m.exceptions.len() as u64);
    let mut last = 0u32;
    for (uid, uidl) in &m.exceptions {
        varint(&mut out, u64::from(uid.wrapping_sub(last)));
        last = *uid;
        varint(&mut out, uidl.len() as u64);
        out.extend_from_slice(uidl.as_bytes());
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
    let mut uid = 0u32;
    for _ in 0..n {
        uid = uid.checked_add(u32::try_from(r.varint()?).ok()?)?;
        let size = r.varint()?;
        let date = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
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
    for _ in 0..n {
        uid = uid.checked_add(u32::try_from(r.varint()?).ok()?)?;
        let len = usize::try_from(r.varint()?).ok()?;
        let uidl = std::str::from_utf8(r.take(len)?).ok()?;
        exceptions.insert(uid, uidl.to_string());
    }
    (r.pos == b.len()).then_some(Memory {
        uid_validity,
        prints,
        exceptions,
    })
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
            proptest::collection::btree_map(1u32.., "[!-~]{1,70}", 0..10),
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
        // Header 6; the print 15 (UID gap 1, size 2, date 4, hash 8); the
        // exception list 6.
        assert_eq!(b.len(), 6 + 15 + 6);
    }
}
