//! Which IMAP message each old POP3 message is: a pure function.
//!
//! Messages are paired by header hash (`headers`). Within a group of equal
//! hashes (identical copies, or the same message delivered twice) equal
//! sizes pair first, then the rest one to one in order: sizes only break
//! ties, since servers disagree on them (CRLF against LF, added trace
//! fields). Each side's message is paired at most once.
//!
//! The memory built from the pairs gives each paired message the old UIDL
//! and every other message the template's, or a fresh UIDL when the
//! template's string is one the old server gave out: a client may have
//! seen it, for other content.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::pop3::uidl::UidlTemplate;
use crate::state::{matcher, Memory, Print};

/// A message on the old server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldMessage {
    pub uidl: String,
    pub size: u64,
    pub hash: u128,
}

/// A message in the IMAP mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMessage {
    pub uid: u32,
    pub size: u64,
    pub hash: u128,
}

/// UID -> old UIDL for each pair.
pub fn pair(old: &[OldMessage], new: &[NewMessage]) -> HashMap<u32, String> {
    let mut groups: BTreeMap<u128, (Vec<&OldMessage>, Vec<&NewMessage>)> = BTreeMap::new();
    for o in old {
        groups.entry(o.hash).or_default().0.push(o);
    }
    for n in new {
        groups.entry(n.hash).or_default().1.push(n);
    }
    let mut pairs = HashMap::new();
    for (olds, news) in groups.values_mut() {
        let mut taken = vec![false; news.len()];
        let mut left = Vec::new();
        for o in olds.iter() {
            let same_size = (0..news.len()).find(|&i| !taken[i] && news[i].size == o.size);
            match same_size {
                Some(i) => {
                    taken[i] = true;
                    pairs.insert(news[i].uid, o.uidl.clone());
                }
                None => left.push(*o),
            }
        }
        let mut free = (0..news.len()).filter(|&i| !taken[i]);
        for o in left {
            let Some(i) = free.next() else { break };
            pairs.insert(news[i].uid, o.uidl.clone());
        }
    }
    pairs
}

/// The mailbox's first memory: `prints` (sorted by UID) with the paired
/// messages' old UIDLs as exceptions. Returns it with the number of
/// messages that kept an old UIDL.
pub fn memory(
    prints: &[Print],
    pairs: &HashMap<u32, String>,
    old: &[OldMessage],
    uid_validity: u32,
    template: &UidlTemplate,
) -> (Memory, usize) {
    let taken: HashSet<&str> = old.iter().map(|o| o.uidl.as_str()).collect();
    let mut given: HashSet<String> = HashSet::with_capacity(prints.len());
    let mut exceptions = BTreeMap::new();
    let mut matched = 0;
    for p in prints {
        let uidl = match pairs.get(&p.uid) {
            Some(u) if !given.contains(u) => {
                matched += 1;
                u.clone()
            }
            _ => matcher::fresh(template.uidl(p.uid, uid_validity), p, uid_validity, |u| {
                taken.contains(u) || given.contains(u)
            }),
        };
        if uidl != template.uidl(p.uid, uid_validity) {
            exceptions.insert(p.uid, uidl.clone());
        }
        given.insert(uidl);
    }
    let memory = Memory {
        uid_validity,
        prints: prints.to_vec(),
        exceptions,
    };
    (memory, matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(uidl: &str, size: u64, hash: u128) -> OldMessage {
        OldMessage {
            uidl: uidl.into(),
            size,
            hash,
        }
    }

    fn new(uid: u32, size: u64, hash: u128) -> NewMessage {
        NewMessage { uid, size, hash }
    }

    fn print(uid: u32) -> Print {
        Print {
            uid,
            size: 10,
            date: 0,
            hash: 0,
        }
    }

    #[test]
    fn pairs_by_hash_in_any_order() {
        let o = [old("a", 10, 1), old("b", 20, 2), old("c", 30, 3)];
        let n = [new(7, 30, 3), new(8, 10, 1), new(9, 20, 2)];
        let p = pair(&o, &n);
        assert_eq!(p[&7], "c");
        assert_eq!(p[&8], "a");
        assert_eq!(p[&9], "b");
    }

    #[test]
    fn sizes_only_break_ties() {
        // One message each with the same hash: paired though the size
        // changed (a server stored it with LF).
        let p = pair(&[old("a", 100, 1)], &[new(1, 97, 1)]);
        assert_eq!(p[&1], "a");
        // Two with the same hash: equal sizes pair first.
        let p = pair(
            &[old("a", 100, 1), old("b", 200, 1)],
            &[new(1, 200, 1), new(2, 100, 1)],
        );
        assert_eq!((p[&1].as_str(), p[&2].as_str()), ("b", "a"));
    }

    #[test]
    fn identical_duplicates_pair_one_to_one() {
        let o = [old("a", 10, 5), old("b", 10, 5)];
        let n = [new(1, 10, 5), new(2, 10, 5), new(3, 10, 5)];
        let p = pair(&o, &n);
        assert_eq!(p.len(), 2);
        let mut got: Vec<&str> = p.values().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn missing_messages_stay_unpaired() {
        // Gone from the new server, and new on it.
        let p = pair(
            &[old("a", 1, 1), old("gone", 2, 2)],
            &[new(1, 1, 1), new(2, 3, 3)],
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[&1], "a");
        assert!(pair(&[], &[new(1, 1, 1)]).is_empty());
        assert!(pair(&[old("a", 1, 1)], &[]).is_empty());
    }

    #[test]
    fn memory_keeps_old_uidls_and_never_reuses_them() {
        let t = UidlTemplate::default();
        // The old server used the same template under another
        // UIDVALIDITY... and the one message it listed unpaired has the
        // string the template would give UID 2 now.
        let clash = t.uidl(2, 9);
        let o = [old("x1", 1, 1), old(&clash, 2, 2)];
        let pairs = HashMap::from([(1, "x1".to_string())]);
        let (m, matched) = memory(&[print(1), print(2), print(3)], &pairs, &o, 9, &t);
        assert_eq!(matched, 1);
        assert_eq!(m.exceptions[&1], "x1");
        assert_ne!(m.exceptions[&2], clash);
        assert!(m.exceptions[&2].starts_with('p'));
        assert!(!m.exceptions.contains_key(&3));
        let all: Vec<String> = matcher::uidls(&m, &t).map(|(_, u)| u).collect();
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), 3);
    }

    #[test]
    fn an_old_uidl_equal_to_the_template_is_no_exception() {
        let t = UidlTemplate::default();
        let same = t.uidl(1, 4);
        let pairs = HashMap::from([(1, same.clone())]);
        let (m, matched) = memory(&[print(1)], &pairs, &[old(&same, 1, 1)], 4, &t);
        assert_eq!(matched, 1);
        assert!(m.exceptions.is_empty());
    }
}
