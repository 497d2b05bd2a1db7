//! QUIT's UPDATE: what is removed and flagged upstream, and what each
//! failure leaves behind and answers.

use super::delete_action::{move_with_refusals, move_with_the_first_copy_refused};
use super::{Gateway, Peer};

pub const NOT_REMOVED: &str =
    "-ERR [SYS/TEMP] Some deleted messages were not removed; try again later.";

/// Logs in, retrieves message 2, deletes 1 and 3, and quits.
async fn delete_and_quit(peer: Peer) -> (Gateway, String) {
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.cmd("RETR 2").await;
    pop.body().await;
    pop.cmd("DELE 1").await;
    pop.cmd("DELE 3").await;
    let answer = pop.cmd("QUIT").await;
    assert!(pop.closed().await);
    (gw, answer)
}

#[tokio::test]
async fn quit_removes_exactly_the_deleted_uids() {
    let (gw, answer) = delete_and_quit(Peer::with_messages(4)).await;
    assert_eq!(answer, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![2, 4]);
    assert_eq!(gw.peer.count("UID EXPUNGE 1,3"), 1, "{:?}", gw.peer.log());
    assert_eq!(gw.peer.count("EXPUNGE"), 1, "no bare EXPUNGE");
    assert_eq!(gw.peer.count("SELECT"), 1, "the mailbox is still selected");
    assert_eq!(gw.ctx.metrics.messages_deleted.get(), 2);
    assert_eq!(gw.peer.flagged(|m| m.seen), vec![2]);
    assert_eq!(gw.outcomes("quit"), 1);
}

#[tokio::test]
async fn quit_marks_retrieved_messages_seen() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    pop.cmd("RETR 2").await;
    pop.body().await;
    pop.cmd("TOP 3 1").await;
    pop.body().await;
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert_eq!(gw.peer.flagged(|m| m.seen), vec![2], "TOP does not mark");
    assert_eq!(gw.peer.count("EXPUNGE"), 0);
}

#[tokio::test]
async fn mark_seen_can_be_turned_off() {
    let cfg = super::config("session:\n  mark_seen: false\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    pop.body().await;
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert_eq!(gw.peer.count("STORE"), 0);
}

#[tokio::test]
async fn a_refused_seen_flag_does_not_fail_quit() {
    let peer = Peer::with_messages(3);
    peer.set(|b| {
        b.refuse
            .push(("(\\Seen)".into(), "NO [SERVERBUG] no".into()))
    });
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![2]);
}

#[tokio::test]
async fn a_refused_deleted_flag_removes_nothing() {
    let peer = Peer::with_messages(3);
    peer.set(|b| {
        b.refuse
            .push(("(\\Deleted)".into(), "NO [SERVERBUG] no".into()))
    });
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
    assert_eq!(gw.peer.flagged(|m| m.deleted), Vec::<u32>::new());
    assert_eq!(gw.outcomes("quit_failed"), 1);
    assert_eq!(gw.ctx.metrics.quit_failures.get(), 1);
}

#[tokio::test]
async fn a_refused_uid_expunge_leaves_the_messages_for_the_next_session() {
    let peer = Peer::with_messages(3);
    peer.set(|b| {
        b.refuse
            .push(("UID EXPUNGE".into(), "NO [SERVERBUG] no".into()))
    });
    let (gw, answer) = delete_and_quit(peer.clone()).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
    assert_eq!(
        gw.peer.flagged(|m| m.deleted),
        Vec::<u32>::new(),
        "our \\Deleted flags are taken back"
    );
    // The next session sees them and can delete them again.
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![2]);
}

#[tokio::test]
async fn an_upstream_drop_at_the_flag_store_removes_nothing() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.drop_at = Some("(\\Deleted)".into()));
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
}

#[tokio::test]
async fn an_upstream_drop_at_the_expunge_removes_nothing() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.drop_at = Some("UID EXPUNGE".into()));
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
}

#[tokio::test]
async fn an_upstream_drop_at_the_seen_store_fails_quit() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.drop_at = Some("(\\Seen)".into()));
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
}

fn without_uidplus(peer: &Peer) {
    peer.set(|b| b.caps = "IMAP4rev1 AUTH=PLAIN SASL-IR ID".into());
}

#[tokio::test]
async fn without_uidplus_expunge_runs_when_only_ours_are_flagged() {
    let peer = Peer::with_messages(4);
    without_uidplus(&peer);
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![2, 4]);
    assert_eq!(gw.peer.count("UID EXPUNGE"), 0);
}

#[tokio::test]
async fn without_uidplus_others_flags_keep_ours_unflagged_and_say_so() {
    let peer = Peer::with_messages(4);
    without_uidplus(&peer);
    let (gw, mut pop) = Gateway::new(peer.clone()).await;
    pop.login().await;
    pop.cmd("DELE 1").await;
    // Another client flags message 4 meanwhile.
    peer.0.lock().unwrap().messages[3].deleted = true;
    assert_eq!(pop.cmd("QUIT").await, NOT_REMOVED);
    assert_eq!(
        gw.peer.uids(),
        vec![1, 2, 3, 4],
        "nobody's message expunged"
    );
    assert_eq!(
        gw.peer.flagged(|m| m.deleted),
        vec![4],
        "only theirs flagged"
    );
}

#[tokio::test]
async fn without_uidplus_a_refused_expunge_takes_our_flags_back() {
    let peer = Peer::with_messages(3);
    without_uidplus(&peer);
    peer.set(|b| {
        b.refuse
            .push(("EXPUNGE".into(), "NO [SERVERBUG] no".into()))
    });
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
    assert_eq!(gw.peer.flagged(|m| m.deleted), Vec::<u32>::new());
}

#[tokio::test]
async fn quit_in_the_middle_of_a_batch_reads_past_it() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(5)).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    pop.body().await;
    pop.cmd("DELE 2").await;
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![1, 3, 4, 5]);
}

#[tokio::test]
async fn leaving_without_quit_changes_nothing() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    pop.body().await;
    pop.cmd("DELE 1").await;
    pop.hang_up().await;
    let peer = gw.peer.clone();
    let ctx = gw.ctx.clone();
    assert!(gw.finished().await);
    assert_eq!(peer.uids(), vec![1, 2, 3]);
    assert_eq!(peer.flagged(|m| m.seen || m.deleted), Vec::<u32>::new());
    assert_eq!(
        ctx.metrics
            .sessions
            .with_label_values(&["test", "none", "client_disconnected"])
            .get(),
        1
    );
}

#[tokio::test]
async fn without_uidplus_a_drop_at_the_search_removes_nothing() {
    let peer = Peer::with_messages(3);
    without_uidplus(&peer);
    peer.set(|b| b.drop_at = Some("SEARCH".into()));
    let (gw, answer) = delete_and_quit(peer).await;
    assert_eq!(answer, NOT_REMOVED);
    assert_eq!(gw.peer.uids(), vec![1, 2, 3]);
    assert_eq!(gw.peer.count("EXPUNGE"), 0);
}

#[tokio::test]
async fn expire_0_removes_every_retrieved_message_without_asking_dates() {
    let cfg = super::config("policy:\n  expire: 0\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(3), cfg).await;
    pop.login().await;
    for n in [1, 3] {
        pop.cmd(&format!("RETR {n}")).await;
        pop.body().await;
    }
    assert!(pop.cmd("QUIT").await.starts_with("+OK"));
    assert_eq!(gw.peer.uids(), vec![2]);
    assert_eq!(gw.peer.count("SEARCH"), 0, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn quit_is_counted_by_its_answer() {
    let (failed, answer) = move_with_the_first_copy_refused("NO [SERVERBUG] try later").await;
    assert_eq!(answer, NOT_REMOVED);
    let (done, answer) = move_with_refusals(&[]).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    for (gw, result) in [(failed, "err"), (done, "ok")] {
        let metrics = gw.ctx.metrics.clone();
        assert!(gw.finished().await);
        let quits = |r: &str| metrics.commands.with_label_values(&["QUIT", r]).get();
        assert_eq!(quits(result), 1, "{result}");
        assert_eq!(quits("ok") + quits("err"), 1, "{result}");
    }
}

#[tokio::test]
async fn a_refused_take_back_does_not_stop_the_others() {
    // 1,200 scattered deletions make two UID sets. The first expunge is
    // refused, and so is taking the flag back from the first set: the
    // second set must still get its messages back.
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2400)).await;
    gw.peer.refuse("UID EXPUNGE", "NO [SERVERBUG] no");
    gw.peer.refuse("-FLAGS", "NO [SERVERBUG] no");
    pop.login().await;
    let deletions: String = (1..=2400)
        .step_by(2)
        .map(|n| format!("DELE {n}\r\n"))
        .collect();
    pop.send_raw(deletions.as_bytes()).await;
    for _ in 0..1200 {
        assert!(pop.line().await.starts_with("+OK"));
    }
    assert_eq!(pop.cmd("QUIT").await, NOT_REMOVED);
    let log = gw.peer.log();
    let take_backs: Vec<&String> = log.iter().filter(|c| c.contains("-FLAGS")).collect();
    assert_eq!(take_backs.len(), 2, "one take-back per set");
    let first_set: Vec<u32> = take_backs[0]
        .split(' ')
        .nth(2)
        .unwrap()
        .split(',')
        .map(|u| u.parse().unwrap())
        .collect();
    assert!(first_set.len() < 1200);
    assert_eq!(gw.peer.flagged(|m| m.deleted), first_set);
    assert_eq!(gw.peer.uids().len(), 2400, "nothing removed");
}

#[tokio::test]
async fn expire_removes_the_retrieved_messages_the_server_finds_older_than_the_day() {
    const DAYS: u64 = 3;
    let peer = Peer::with_messages(3);
    // The server names 2 and 3; 3 was not retrieved, so it stays.
    peer.set(|b| b.search_before = vec![2, 3]);
    let cfg = super::config(&format!("policy:\n  expire: {DAYS}\n"));
    let (gw, mut pop) = Gateway::with(peer, cfg).await;
    let day = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        popgate::imap::date::search_day((now - DAYS * 86_400) as i64)
    };
    let before = day();
    pop.login().await;
    for n in [1, 2] {
        assert!(pop.cmd(&format!("RETR {n}")).await.starts_with("+OK"));
        pop.body().await;
    }
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out, messages deleted.");
    let after = day();
    assert_eq!(gw.peer.uids(), vec![1, 3]);
    let searched = gw.peer.log().into_iter().find(|c| c.contains("BEFORE"));
    let searched = searched.expect("a SEARCH BEFORE");
    assert!(
        searched == format!("UID SEARCH UID 1:2 BEFORE {before}")
            || searched == format!("UID SEARCH UID 1:2 BEFORE {after}"),
        "{searched}"
    );
}
