//! QUIT under the other delete actions: `move` to a folder (with MOVE, or
//! COPY and a folder created on demand) and `flag` with a keyword.

use super::update::NOT_REMOVED;
use super::{Gateway, Peer};

/// With `delete.action: move` to Trash: logs in, deletes message 1 of 2,
/// and quits, the first UID COPY answered with `refusal`.
pub async fn move_with_the_first_copy_refused(refusal: &str) -> (Gateway, String) {
    move_with_refusals(&[("UID COPY", refusal)]).await
}

/// As [`move_with_the_first_copy_refused`], with each command's first
/// occurrence answered as `refusals` say.
pub async fn move_with_refusals(refusals: &[(&str, &str)]) -> (Gateway, String) {
    let peer = Peer::with_messages(2);
    for (command, refusal) in refusals {
        peer.refuse(command, refusal);
    }
    dele_and_quit(peer, MOVE, &[1]).await
}

const MOVE: &str = "delete:\n  action: move\n  folder: Trash\n";

/// Logs in under the `delete` section `delete`, deletes `numbers` and
/// quits.
async fn dele_and_quit(peer: Peer, delete: &str, numbers: &[u32]) -> (Gateway, String) {
    let (gw, mut pop) = Gateway::with(peer, super::config(delete)).await;
    pop.login().await;
    for n in numbers {
        pop.cmd(&format!("DELE {n}")).await;
    }
    let answer = pop.cmd("QUIT").await;
    (gw, answer)
}

#[tokio::test]
async fn a_server_offering_move_has_the_deleted_messages_moved() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.caps.push_str(" MOVE"));
    let (gw, answer) = dele_and_quit(peer, MOVE, &[1, 2]).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    assert_eq!(
        gw.peer.count("UID MOVE 1:2 \"Trash\""),
        1,
        "{:?}",
        gw.peer.log()
    );
    assert_eq!(gw.peer.count("COPY"), 0);
    assert_eq!(gw.peer.uids(), vec![3]);
}

#[tokio::test]
async fn a_missing_trash_folder_is_created_and_the_copy_tried_again() {
    let (gw, answer) = move_with_the_first_copy_refused("NO [TRYCREATE] no such folder").await;
    assert!(answer.starts_with("+OK"), "{answer}");
    assert_eq!(gw.peer.count("CREATE \"Trash\""), 1, "{:?}", gw.peer.log());
    assert_eq!(gw.peer.count("UID COPY 1 \"Trash\""), 2);
    assert_eq!(gw.peer.uids(), vec![2]);
}

#[tokio::test]
async fn a_trash_folder_another_session_just_created_is_used() {
    let (gw, answer) = move_with_refusals(&[
        ("UID COPY", "NO [TRYCREATE] no such folder"),
        ("CREATE", "NO [ALREADYEXISTS] there already"),
    ])
    .await;
    assert!(answer.starts_with("+OK"), "{answer}");
    assert_eq!(
        gw.peer.count("UID COPY 1 \"Trash\""),
        2,
        "{:?}",
        gw.peer.log()
    );
    assert_eq!(gw.peer.uids(), vec![2]);
}

#[tokio::test]
async fn a_trash_folder_that_cannot_be_created_removes_nothing() {
    let (gw, answer) = move_with_refusals(&[
        ("UID COPY", "NO [TRYCREATE] no such folder"),
        ("CREATE", "NO [NOPERM] not yours"),
    ])
    .await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.count("UID COPY"), 1, "{:?}", gw.peer.log());
    assert_eq!(gw.peer.uids(), vec![1, 2]);
}

#[tokio::test]
async fn a_copy_refused_for_another_reason_creates_nothing() {
    let (gw, answer) = move_with_the_first_copy_refused("NO [SERVERBUG] try later").await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.count("CREATE"), 0, "{:?}", gw.peer.log());
    assert_eq!(gw.peer.uids(), vec![1, 2]);
}

#[tokio::test]
async fn a_retrieved_message_deleted_is_marked_seen_only_when_it_is_kept() {
    let flag = "delete:\n  action: flag\n  keyword: \"$POP3Deleted\"\n";
    for (delete, stores) in [("", 0), (flag, 1)] {
        let (gw, mut pop) = Gateway::with(Peer::with_messages(2), super::config(delete)).await;
        pop.login().await;
        pop.cmd("RETR 1").await;
        pop.body().await;
        pop.cmd("DELE 1").await;
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));
        let seen = gw.peer.count("UID STORE 1 +FLAGS.SILENT (\\Seen)");
        assert_eq!(seen, stores, "{delete:?}: {:?}", gw.peer.log());
    }
}

#[tokio::test]
async fn the_flag_action_sets_the_keyword_and_removes_nothing() {
    let flag = "delete:\n  action: flag\n  keyword: \"$POP3Deleted\"\n";
    let (gw, answer) = dele_and_quit(Peer::with_messages(3), flag, &[2]).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    assert_eq!(
        gw.peer.count("UID STORE 2 +FLAGS.SILENT ($POP3Deleted)"),
        1,
        "{:?}",
        gw.peer.log()
    );
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
}
