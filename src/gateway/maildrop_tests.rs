//! The maildrop's numbering, marks, batches, folders and UID sets.

use super::{uid_sets, Budget, Maildrop, MessageError};
use crate::imap::Listing;
use crate::pop3::uidl::UidlTemplate;
use bytes::BytesMut;
use proptest::prelude::*;

fn drop3() -> Maildrop {
    let l = |uid, size, deleted| Listing { uid, size, deleted };
    Maildrop::new(
        77,
        &[
            l(3, 100, false),
            l(5, 50, true),
            l(9, 20, false),
            l(10, 1, false),
        ],
    )
}

fn text(f: impl FnOnce(&mut BytesMut)) -> String {
    let mut out = BytesMut::new();
    f(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn hides_deleted_and_numbers_from_one() {
    let d = drop3();
    assert_eq!(text(|o| d.stat(o)), "+OK 3 121\r\n");
    assert_eq!(
        text(|o| d.list(None, o).unwrap()),
        "+OK 3 messages:\r\n1 100\r\n2 20\r\n3 1\r\n.\r\n"
    );
    assert_eq!(text(|o| d.list(Some(2), o).unwrap()), "+OK 2 20\r\n");
    let t = UidlTemplate::default();
    assert_eq!(
        text(|o| d.uidl(&t, Some(3), o).unwrap()),
        "+OK 3 0000000a0000004d\r\n"
    );
}

#[test]
fn the_window_keeps_the_newest() {
    let d = drop3().newest(2);
    assert_eq!(text(|o| d.stat(o)), "+OK 2 21\r\n");
    let t = UidlTemplate::default();
    assert_eq!(
        text(|o| d.uidl(&t, Some(1), o).unwrap()),
        "+OK 1 000000090000004d\r\n"
    );
    let last = drop3().newest(1);
    assert_eq!(
        text(|o| last.uidl(&t, Some(1), o).unwrap()),
        "+OK 1 0000000a0000004d\r\n"
    );
    assert_eq!(text(|o| drop3().newest(0).stat(o)), "+OK 3 121\r\n");
    assert_eq!(text(|o| drop3().newest(5).stat(o)), "+OK 3 121\r\n");
}

#[test]
fn folders_follow_each_other_with_their_own_uidls() {
    let l = |uid| Listing {
        uid,
        size: 10,
        deleted: false,
    };
    let d = Maildrop::join(vec![
        ("INBOX".into(), Maildrop::new(7, &[l(1), l(2)])),
        ("News".into(), Maildrop::new(8, &[l(1)])),
    ]);
    let t = UidlTemplate::default();
    assert_eq!(
        text(|o| d.uidl(&t, None, o).unwrap()),
        format!(
            "+OK\r\n1 0000000100000007\r\n2 0000000200000007\r\n3 0000000100000008{}\r\n.\r\n",
            super::folder_suffix("News")
        )
    );
    assert_eq!((d.folder_of(2), d.folder_of(3)), (0, 1));
    let all = Budget {
        messages: 10,
        octets: 1000,
    };
    assert_eq!(d.batch_from(1, all), vec![(1, 1), (2, 2)]);
    assert_eq!(
        super::folder_suffix("News").len(),
        crate::config::FOLDER_SUFFIX_LEN
    );
}

#[test]
fn folder_suffixes_are_fnv_1a_and_never_change_between_releases() {
    // Clients keep these UIDLs: a different hash downloads every message
    // of the folder again.
    assert_eq!(super::folder_suffix("News"), ".cbf40866");
    assert_eq!(super::folder_suffix("Newsletters"), ".2350a3eb");
    assert_eq!(super::folder_suffix(""), ".811c9dc5");
}

#[test]
fn quit_has_work_only_in_folders_with_deleted_or_retrieved_messages() {
    let l = |uid| Listing {
        uid,
        size: 10,
        deleted: false,
    };
    let mut d = Maildrop::join(vec![
        ("INBOX".into(), Maildrop::new(7, &[l(1), l(2)])),
        ("News".into(), Maildrop::new(8, &[l(1)])),
        ("Lists".into(), Maildrop::new(9, &[l(4)])),
    ]);
    assert!(!(0..3).any(|f| d.touched(f)), "nothing done yet");
    d.delete(2).unwrap();
    d.mark_retrieved(4);
    assert_eq!(
        (d.touched(0), d.touched(1), d.touched(2)),
        (true, false, true)
    );
    d.reset();
    assert_eq!(
        (d.touched(0), d.touched(1), d.touched(2)),
        (false, false, true)
    );
}

#[test]
fn dele_and_rset_only_mark() {
    let mut d = drop3();
    d.delete(2).unwrap();
    assert_eq!(d.delete(2), Err(MessageError::Deleted));
    assert_eq!(d.fetchable(2), Err(MessageError::Deleted));
    assert_eq!(d.fetchable(4), Err(MessageError::NoSuchMessage));
    assert_eq!(d.fetchable(0), Err(MessageError::NoSuchMessage));
    assert_eq!(text(|o| d.stat(o)), "+OK 2 101\r\n");
    assert_eq!(
        text(|o| d.list(None, o).unwrap()),
        "+OK 2 messages:\r\n1 100\r\n3 1\r\n.\r\n"
    );
    assert_eq!(d.deleted_uids(0), vec![9]);
    d.reset();
    assert!(d.deleted_uids(0).is_empty());
    assert_eq!(text(|o| d.stat(o)), "+OK 3 121\r\n");
}

#[test]
fn retrieved_but_deleted_are_not_marked_seen() {
    let mut d = drop3();
    d.mark_retrieved(1);
    d.mark_retrieved(2);
    d.delete(2).unwrap();
    assert_eq!(d.retrieved_uids(0, false), vec![3]);
    assert_eq!(d.retrieved_uids(0, true), vec![3, 9]);
    d.mark_gone(3);
    assert_eq!(d.fetchable(3), Err(MessageError::Gone));
}

#[test]
fn batches_stop_at_gaps_and_budgets() {
    let l = |uid, size| Listing {
        uid,
        size,
        deleted: false,
    };
    let mut d = Maildrop::new(1, &[l(1, 10), l(2, 10), l(3, 10), l(4, 10), l(5, 10)]);
    let all = Budget {
        messages: 10,
        octets: 1000,
    };
    assert_eq!(d.batch_from(2, all), vec![(2, 2), (3, 3), (4, 4), (5, 5)]);
    assert_eq!(
        d.batch_from(
            1,
            Budget {
                messages: 2,
                octets: 1000
            }
        ),
        vec![(1, 1), (2, 2)]
    );
    assert_eq!(
        d.batch_from(
            1,
            Budget {
                messages: 10,
                octets: 25
            }
        ),
        vec![(1, 1), (2, 2), (3, 3)]
    );
    assert_eq!(
        d.batch_from(
            1,
            Budget {
                messages: 10,
                octets: 0
            }
        ),
        vec![(1, 1)]
    );
    d.delete(3).unwrap();
    assert_eq!(d.batch_from(1, all), vec![(1, 1), (2, 2)]);
    assert_eq!(d.batch_from(5, all), vec![(5, 5)]);
}

#[test]
fn sets_compress_runs() {
    assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8], 100), vec!["1:3,5,7:8"]);
    assert_eq!(uid_sets(&[1, 3, 5], 2), vec!["1,3", "5"]);
    assert!(uid_sets(&[], 10).is_empty());
}

proptest! {
    #[test]
    fn sets_cover_exactly_the_uids(mut uids in proptest::collection::btree_set(1u32..500, 0..200), max in 1usize..50) {
        let list: Vec<u32> = std::mem::take(&mut uids).into_iter().collect();
        let mut back = Vec::new();
        for set in uid_sets(&list, max) {
            for part in set.split(',') {
                match part.split_once(':') {
                    Some((a, b)) => back.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
                    None => back.push(part.parse().unwrap()),
                }
            }
        }
        prop_assert_eq!(back, list);
    }
}
