use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::{assign, uidls};
use crate::pop3::uidl::UidlTemplate;
use crate::state::{Memory, Print};

fn print(uid: u32, content: u8) -> Print {
    Print {
        uid,
        size: 100 + u64::from(content % 3),
        date: 1_700_000_000,
        hash: u64::from(content),
    }
}

fn issue(m: &Memory, t: &UidlTemplate) -> HashMap<String, (u64, u32, u64)> {
    uidls(m, t).map(|(p, u)| (u, p.content())).collect()
}

#[test]
fn reset_with_uids_kept_keeps_every_uidl() {
    let t = UidlTemplate::default();
    let first = assign(None, &[print(1, 1), print(2, 2), print(3, 3)], 10, &t);
    assert!(first.memory.exceptions.is_empty());
    let again = assign(
        Some(&first.memory),
        &[print(1, 1), print(2, 2), print(3, 3)],
        11,
        &t,
    );
    assert_eq!((again.matched, again.unmatched), (3, 0));
    let before: Vec<_> = uidls(&first.memory, &t).map(|(_, u)| u).collect();
    let after: Vec<_> = uidls(&again.memory, &t).map(|(_, u)| u).collect();
    assert_eq!(before, after);
}

#[test]
fn renumbered_duplicates_pair_one_to_one_and_new_mail_is_fresh() {
    let t = UidlTemplate::default();
    let first = assign(None, &[print(1, 7), print(2, 7), print(3, 8)], 10, &t);
    let new = [print(1, 8), print(2, 7), print(3, 9), print(4, 7)];
    let again = assign(Some(&first.memory), &new, 20, &t);
    assert_eq!((again.matched, again.unmatched), (3, 1));
    let got: Vec<_> = uidls(&again.memory, &t).map(|(_, u)| u).collect();
    assert_eq!(got[0], t.uidl(3, 10));
    assert_eq!(got[1], t.uidl(1, 10));
    assert_eq!(got[2], t.uidl(3, 20));
    assert_eq!(got[3], t.uidl(2, 10));
    // Only the message without a memory follows the template.
    assert_eq!(again.memory.exceptions.len(), 3);
}

#[test]
fn a_template_without_uidvalidity_never_hands_an_old_uidl_to_new_content() {
    let t: UidlTemplate = "%u".parse().unwrap();
    let first = assign(None, &[print(1, 1), print(2, 2)], 10, &t);
    // Message 1 is gone; new content arrives with UID 1 under a new UIDVALIDITY.
    let again = assign(Some(&first.memory), &[print(1, 5), print(3, 2)], 11, &t);
    let got: Vec<_> = uidls(&again.memory, &t).map(|(_, u)| u).collect();
    assert_ne!(got[0], "1");
    assert_eq!(got[1], "2");
}

#[test]
fn same_uidvalidity_follows_uids() {
    let t = UidlTemplate::default();
    let mut m = assign(None, &[print(1, 1), print(2, 2)], 10, &t).memory;
    m.exceptions.insert(2, "kept-from-before".into());
    let again = assign(Some(&m), &[print(2, 2), print(5, 1)], 10, &t);
    assert_eq!(
        again.memory.exceptions,
        BTreeMap::from([(2, "kept-from-before".to_string())])
    );
}

/// Old and new (UID, content) lists, UIDs given exceptions, whether the
/// UIDVALIDITY stays, whether the template lacks %v.
type Scenario = (Vec<(u32, u8)>, Vec<(u32, u8)>, Vec<u32>, bool, bool);

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::btree_map(1u32..60, 0u8..6, 0..25),
        proptest::collection::btree_map(1u32..60, 0u8..8, 0..25),
        proptest::collection::vec(1u32..60, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(old, new, exc, same, plain)| {
            (
                old.into_iter().collect(),
                new.into_iter().collect(),
                exc,
                same,
                plain,
            )
        })
}

proptest! {
    #[test]
    fn uidls_stay_unique_and_with_their_content(
        (old, new, exc, same, plain) in scenario(),
        rounds in 1usize..4,
    ) {
        let t: UidlTemplate = if plain { "%u" } else { "%08Xu%08Xv" }.parse().unwrap();
        let old: Vec<Print> = old.iter().map(|&(u, c)| print(u, c)).collect();
        let mut memory = assign(None, &old, 100, &t).memory;
        for uid in exc {
            if memory.prints.iter().any(|p| p.uid == uid) {
                memory.exceptions.insert(uid, format!("x{uid}"));
            }
        }
        // Every UIDL ever issued, with the content it was issued to.
        let mut history = issue(&memory, &t);
        let new: Vec<Print> = new.iter().map(|&(u, c)| print(u, c)).collect();
        let mut validity = 100;
        for round in 0..rounds {
            if !same || round > 0 {
                validity += 1;
            }
            // Under one UIDVALIDITY a UID names one message.
            let new: Vec<Print> = new
                .iter()
                .map(|p| match memory.prints.iter().find(|o| o.uid == p.uid) {
                    Some(o) if validity == memory.uid_validity => *o,
                    _ => *p,
                })
                .collect();
            // A template without %v can only keep what is remembered; with
            // it, nothing ever issued moves.
            if plain {
                history = issue(&memory, &t);
            }
            let a = assign(Some(&memory), &new, validity, &t);
            let now: Vec<(Print, String)> = uidls(&a.memory, &t).collect();
            let distinct: HashSet<&String> = now.iter().map(|(_, u)| u).collect();
            prop_assert_eq!(distinct.len(), now.len());
            for (p, u) in &now {
                prop_assert!(u.len() <= 70 && u.bytes().all(|c| (0x21..=0x7e).contains(&c)));
                if let Some(content) = history.get(u) {
                    prop_assert_eq!(*content, p.content(), "{} moved to other content", u);
                }
            }
            if validity != memory.uid_validity {
                prop_assert_eq!(a.matched + a.unmatched, new.len());
            }
            history.extend(issue(&a.memory, &t));
            memory = a.memory;
        }
    }

    #[test]
    fn a_renumbered_mailbox_keeps_every_uidl(contents in proptest::collection::vec(0u8..4, 0..30), shift in 1u32..1000) {
        let t = UidlTemplate::default();
        let old: Vec<Print> = contents.iter().enumerate().map(|(i, &c)| print(i as u32 + 1, c)).collect();
        let first = assign(None, &old, 5, &t);
        let new: Vec<Print> = contents.iter().rev().enumerate().map(|(i, &c)| print(i as u32 + shift, c)).collect();
        let again = assign(Some(&first.memory), &new, 6, &t);
        prop_assert_eq!(again.unmatched, 0);
        let mut before: Vec<String> = uidls(&first.memory, &t).map(|(_, u)| u).collect();
        let mut after: Vec<String> = uidls(&again.memory, &t).map(|(_, u)| u).collect();
        before.sort();
        after.sort();
        prop_assert_eq!(before, after);
    }
}
