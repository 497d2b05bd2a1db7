//! A maildrop of several folders (`mailbox: [INBOX, Other]`): the peer
//! shows its messages in each, and the login leaves the last one SELECTed,
//! so a message or an update in another folder SELECTs it again.

use super::faults::UNAVAILABLE;
use super::{body, config, config_limits, Gateway, Peer, Pop, PASSWORD, USER};

const TWO_FOLDERS: &str = "mailbox: [INBOX, Other]\n";

/// A session logged in to both folders, which show the peer's one message.
async fn logged_in() -> (Gateway, Pop) {
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), config(TWO_FOLDERS)).await;
    pop.login().await;
    (gw, pop)
}

#[tokio::test]
async fn another_folder_is_selected_again_for_its_messages_unless_renumbered() {
    let (gw, mut pop) = logged_in().await;
    assert!(pop.cmd("STAT").await.starts_with("+OK 2 "));
    assert!(pop.cmd("RETR 1").await.starts_with("+OK"));
    assert_eq!(pop.body().await, body(1, 3));
    assert_eq!(gw.peer.count("SELECT \"INBOX\""), 2, "{:?}", gw.peer.log());

    gw.peer.0.lock().unwrap().uid_validity_change = 1;
    let answer = pop.cmd("RETR 2").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    assert_eq!(gw.peer.count("BODY.PEEK"), 1, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn a_refused_select_of_another_folder_refuses_the_message_only() {
    let (gw, mut pop) = logged_in().await;
    gw.peer.refuse("SELECT \"INBOX\"", "NO [SERVERBUG] not now");
    let answer = pop.cmd("RETR 1").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    assert!(pop.cmd("RETR 1").await.starts_with("+OK"), "the next try");
    assert_eq!(pop.body().await, body(1, 3));
}

#[tokio::test]
async fn one_missing_folder_of_several_is_left_out_but_other_refusals_refuse() {
    for (refusal, want) in [
        ("NO [NONEXISTENT] no", "+OK Logged in."),
        ("NO no such folder", "+OK Logged in."),
        ("NO [UNAVAILABLE] not now", UNAVAILABLE),
        ("NO [INUSE] busy", "-ERR [IN-USE] Mailbox is in use."),
    ] {
        let peer = Peer::with_messages(1);
        peer.refuse("SELECT \"Other\"", refusal);
        let cfg = config_limits("", TWO_FOLDERS);
        let (_gw, mut pop) = Gateway::with(peer, cfg).await;
        pop.cmd(&format!("USER {USER}")).await;
        assert_eq!(
            pop.cmd(&format!("PASS {PASSWORD}")).await,
            want,
            "{refusal}"
        );
        if want.starts_with("+OK") {
            assert!(pop.cmd("STAT").await.starts_with("+OK 1 "), "{refusal}");
        }
    }
}

#[tokio::test]
async fn quit_removes_what_was_deleted_in_every_folder() {
    // Deleting the second folder's copy removes the message.
    let (gw, mut pop) = logged_in().await;
    assert!(pop.cmd("STAT").await.starts_with("+OK 2 "));
    assert!(pop.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out, messages deleted.");
    assert!(gw.peer.uids().is_empty(), "{:?}", gw.peer.log());
}

#[tokio::test]
async fn quit_selects_another_folder_again_unless_it_was_renumbered() {
    // DELE 1 is in the first folder, not the SELECTed one.
    for renumbered in [false, true] {
        let (gw, mut pop) = logged_in().await;
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        gw.peer.0.lock().unwrap().uid_validity_change = u32::from(renumbered);
        let answer = pop.cmd("QUIT").await;
        assert_eq!(gw.peer.count("SELECT \"INBOX\""), 2, "{:?}", gw.peer.log());
        if renumbered {
            assert!(answer.starts_with("-ERR"), "{answer}");
            assert_eq!(gw.peer.uids(), vec![1], "nothing removed");
        } else {
            assert_eq!(answer, "+OK Logging out, messages deleted.");
            assert!(gw.peer.uids().is_empty(), "{:?}", gw.peer.log());
        }
    }
}

#[tokio::test]
async fn a_link_lost_at_the_select_of_another_folder_ends_the_session() {
    let (gw, mut pop) = logged_in().await;
    gw.peer.set(|b| b.drop_at = Some("SELECT \"INBOX\"".into()));
    pop.send("RETR 1").await;
    assert!(pop.closed().await, "closing is how the client is told");
}
