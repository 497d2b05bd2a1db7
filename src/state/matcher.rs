//! Which UIDL each message of a snapshot gets, from the mailbox's memory:
//! a pure function, so that its promises can be tested on their own.
//!
//! Under the remembered UIDVALIDITY a UID names the same message, so UIDLs
//! follow UIDs. Under a new one, a message whose print (size, date, header
//! hash) equals a remembered one keeps that one's UIDL; identical
//! duplicates are paired one to one in UID order. Everything else gets the
//! template's UIDL, or, if a remembered message already had that string, a
//! fresh one that nothing had: a UIDL never moves to other content.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::{Memory, Print};
use crate::pop3::uidl::UidlTemplate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The memory to store: the new prints and their exceptions.
    pub memory: Memory,
    /// Messages that kept a remembered UIDL (only counted on a re-match).
    pub matched: usize,
    /// Messages given a new UIDL on a re-match.
    pub unmatched: usize,
}

/// `new` are the snapshot's prints, sorted by UID.
pub fn assign(
    old: Option<&Memory>,
    new: &[Print],
    uid_validity: u32,
    template: &UidlTemplate,
) -> Assignment {
    let remembered = |m: &Memory, p: &Print| {
        m.exceptions
            .get(&p.uid)
            .cloned()
            .unwrap_or_else(|| template.uidl(p.uid, m.uid_validity))
    };
    // Every UIDL the memory knows: none of them may go to other content.
    let mut taken: HashSet<String> = HashSet::new();
    let mut by_uid: HashMap<u32, String> = HashMap::new();
    let mut by_content: HashMap<(u64, u32, u64), VecDeque<String>> = HashMap::new();
    let rematch = old.is_some_and(|m| m.uid_validity != uid_validity);
    if let Some(m) = old {
        taken.extend(m.exceptions.values().cloned());
        for p in &m.prints {
            let uidl = remembered(m, p);
            taken.insert(uidl.clone());
            if rematch {
                by_content.entry(p.content()).or_default().push_back(uidl);
            } else {
                by_uid.insert(p.uid, uidl);
            }
        }
    }
    let mut given: HashSet<String> = HashSet::with_capacity(new.len());
    let mut exceptions = BTreeMap::new();
    let (mut matched, mut unmatched) = (0, 0);
    for p in new {
        let kept = if rematch {
            by_content
                .get_mut(&p.content())
                .and_then(VecDeque::pop_front)
        } else {
            by_uid.remove(&p.uid)
        };
        let uidl = match kept.filter(|u| !given.contains(u)) {
            Some(u) => {
                matched += 1;
                u
            }
            None => {
                unmatched += 1;
                fresh(template.uidl(p.uid, uid_validity), p, uid_validity, |u| {
                    taken.contains(u) || given.contains(u)
                })
            }
        };
        if uidl != template.uidl(p.uid, uid_validity) {
            exceptions.insert(p.uid, uidl.clone());
        }
        given.insert(uidl);
    }
    if !rematch {
        (matched, unmatched) = (0, 0);
    }
    Assignment {
        memory: Memory {
            uid_validity,
            prints: new.to_vec(),
            exceptions,
        },
        matched,
        unmatched,
    }
}

/// The template's UIDL, or when that string is used, one of the form
/// `p<uid><uidvalidity><n>` (hex) that is not.
pub(crate) fn fresh(
    template: String,
    p: &Print,
    uid_validity: u32,
    used: impl Fn(&str) -> bool,
) -> String {
    if !used(&template) {
        return template;
    }
    (0u32..)
        .map(|n| format!("p{:08x}{uid_validity:08x}{n:x}", p.uid))
        .find(|u| !used(u))
        .expect("a free UIDL exists")
}

/// The UIDL of each print under an assignment's memory.
pub fn uidls<'a>(
    memory: &'a Memory,
    template: &'a UidlTemplate,
) -> impl Iterator<Item = (Print, String)> + 'a {
    memory.prints.iter().map(move |p| {
        let u = memory
            .exceptions
            .get(&p.uid)
            .cloned()
            .unwrap_or_else(|| template.uidl(p.uid, memory.uid_validity));
        (*p, u)
    })
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
