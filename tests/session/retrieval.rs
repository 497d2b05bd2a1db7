//! RETR and TOP: streaming, batched body fetches, reads out of order, and
//! servers that answer out of order or with bodies nobody asked for.

use super::{body, config, Gateway, Peer};

/// RETR `n` and checks the body against message `uid`.
async fn retr(pop: &mut super::Pop, n: u32, uid: u32) {
    let want = body(uid, 3);
    assert_eq!(
        pop.cmd(&format!("RETR {n}")).await,
        format!("+OK {} octets", want.len())
    );
    assert_eq!(pop.body().await, want, "RETR {n}");
}

#[tokio::test]
async fn retr_sends_the_message_dot_stuffed() {
    let peer = Peer::default();
    peer.add(
        1,
        b"Subject: dots\r\n\r\n.starts with a dot\r\n..two\r\n.\r\nend\r\n".to_vec(),
    );
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.send("RETR 1").await;
    assert!(pop.line().await.starts_with("+OK "));
    let mut raw = Vec::new();
    loop {
        let l = pop.line().await;
        if l == "." {
            break;
        }
        raw.push(l);
    }
    assert_eq!(
        raw,
        vec![
            "Subject: dots",
            "",
            "..starts with a dot",
            "...two",
            "..",
            "end"
        ]
    );
    assert_eq!(
        gw.ctx
            .metrics
            .messages_sent
            .with_label_values(&["RETR"])
            .get(),
        1
    );
}

#[tokio::test]
async fn retr_of_a_message_without_final_line_end_is_terminated() {
    let peer = Peer::default();
    peer.add(1, b"Subject: x\r\n\r\nno newline".to_vec());
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    assert_eq!(pop.multi().await, vec!["Subject: x", "", "no newline"]);
}

#[tokio::test]
async fn top_sends_headers_and_n_lines() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.login().await;
    assert_eq!(pop.cmd("TOP 1 2").await, "+OK");
    assert_eq!(
        pop.multi().await,
        vec![
            "Subject: message 1",
            "From: a@example.org",
            "",
            "line 0 of message 1",
            "line 1 of message 1"
        ]
    );
}

#[tokio::test]
async fn top_zero_fetches_only_headers() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    assert_eq!(pop.cmd("TOP 2 0").await, "+OK");
    assert_eq!(pop.multi().await.len(), 3);
    assert_eq!(gw.peer.count("BODY.PEEK[HEADER]"), 1);
    assert_eq!(gw.peer.count("BODY.PEEK[])"), 0);
}

#[tokio::test]
async fn retr_of_missing_messages_is_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    assert_eq!(pop.cmd("RETR 3").await, "-ERR No such message.");
    assert_eq!(pop.cmd("TOP 9 1").await, "-ERR No such message.");
    retr(&mut pop, 2, 2).await;
}

#[tokio::test]
async fn reading_in_order_takes_one_fetch() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(4)).await;
    pop.login().await;
    for n in 1..=4 {
        retr(&mut pop, n, n).await;
    }
    assert_eq!(gw.peer.count("BODY.PEEK[]"), 1, "{:?}", gw.peer.log());
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert_eq!(gw.peer.flagged(|m| m.seen), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn skipped_messages_are_read_past() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(5)).await;
    pop.login().await;
    retr(&mut pop, 1, 1).await;
    retr(&mut pop, 4, 4).await;
    retr(&mut pop, 5, 5).await;
    assert_eq!(gw.peer.count("BODY.PEEK[]"), 1);
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert_eq!(gw.peer.flagged(|m| m.seen), vec![1, 4, 5]);
}

#[tokio::test]
async fn reading_backwards_fetches_anew() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    retr(&mut pop, 3, 3).await;
    retr(&mut pop, 1, 1).await;
    retr(&mut pop, 2, 2).await;
    retr(&mut pop, 1, 1).await;
    assert_eq!(gw.peer.count("BODY.PEEK[]"), 3, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn switching_between_top_and_retr_refetches() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    assert_eq!(pop.cmd("TOP 1 0").await, "+OK");
    pop.multi().await;
    retr(&mut pop, 2, 2).await;
    assert_eq!(pop.cmd("TOP 3 0").await, "+OK");
    assert_eq!(pop.multi().await[0], "Subject: message 3");
    retr(&mut pop, 3, 3).await;
}

#[tokio::test]
async fn a_body_fetch_reaches_ahead_fifteen_messages_within_a_mebibyte() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(20)).await;
    pop.login().await;
    retr(&mut pop, 1, 1).await;
    assert_eq!(gw.peer.count("UID FETCH 1:16 "), 1, "{:?}", gw.peer.log());
    // Messages of 100 KiB: the ten after the first fill the mebibyte.
    let peer = Peer::default();
    let text = format!("{}\r\n", "x".repeat(98)).repeat(1024);
    for uid in 1..=20 {
        peer.add(uid, format!("Subject: {uid}\r\n\r\n{text}").into_bytes());
    }
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    assert!(pop.cmd("RETR 1").await.starts_with("+OK"));
    assert_eq!(pop.multi().await.len(), 1026);
    assert_eq!(gw.peer.count("UID FETCH 1:11 "), 1, "{:?}", gw.peer.log());
    // Eight of 128 KiB make exactly the mebibyte, which they may fill.
    let peer = Peer::default();
    for uid in 1..=20 {
        let mut message = format!("Subject: {uid:02}\r\n\r\n").into_bytes();
        message.resize(128 * 1024, b'x');
        peer.add(uid, message);
    }
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    assert!(pop.cmd("RETR 1").await.starts_with("+OK"));
    pop.multi().await;
    assert_eq!(gw.peer.count("UID FETCH 1:9 "), 1, "{:?}", gw.peer.log());
}

/// The UID sets of the body fetches of `section`, in the order sent.
fn fetched_sets(peer: &Peer, section: &str) -> Vec<String> {
    let fetches = peer.log().into_iter().filter(|l| l.contains(section));
    fetches
        .map(|l| l.split(' ').nth(2).unwrap_or_default().to_string())
        .collect()
}

/// The header fetches sent for TOP n 0 of each of `numbers` in turn, in
/// a mailbox of `messages`.
async fn header_fetches_for(messages: u32, numbers: impl Iterator<Item = u32>) -> Vec<String> {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(messages)).await;
    pop.login().await;
    for n in numbers {
        assert_eq!(pop.cmd(&format!("TOP {n} 0")).await, "+OK");
        assert_eq!(pop.multi().await[0], format!("Subject: message {n}"));
    }
    fetched_sets(&gw.peer, "BODY.PEEK[HEADER]")
}

#[tokio::test]
async fn each_batch_read_to_its_end_reaches_twice_as_far() {
    let sets = header_fetches_for(1100, 1..=1100).await;
    let doubling = ["1:32", "33:96", "97:224", "225:480", "481:992", "993:1100"];
    assert_eq!(sets, doubling);
    // Bodies the same, from sixteen: headers read whole do not count.
    let (gw, mut pop) = Gateway::new(Peer::with_messages(60)).await;
    pop.login().await;
    for n in 1..=32 {
        assert_eq!(pop.cmd(&format!("TOP {n} 0")).await, "+OK");
        pop.multi().await;
    }
    for n in 33..=49 {
        retr(&mut pop, n, n).await;
    }
    assert_eq!(fetched_sets(&gw.peer, "BODY.PEEK[]"), ["33:48", "49:60"]);
}

#[tokio::test]
async fn a_batch_left_unread_starts_the_next_small_again() {
    let jumps = header_fetches_for(300, [1, 2, 40, 41, 200].into_iter()).await;
    assert_eq!(jumps, ["1:32", "40:71", "200:231"]);
    // Grown once, then left after its first message.
    let left = header_fetches_for(300, (1..=33).chain([200])).await;
    assert_eq!(left, ["1:32", "33:96", "200:231"]);
    // A batch read whole, then a jump: the jump is read far ahead.
    let whole = header_fetches_for(300, (1..=32).chain([100])).await;
    assert_eq!(whole, ["1:32", "100:163"]);
}

#[tokio::test]
async fn deleted_messages_are_left_out_of_batches() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(4)).await;
    pop.login().await;
    pop.cmd("DELE 2").await;
    retr(&mut pop, 1, 1).await;
    let fetch = gw
        .peer
        .log()
        .into_iter()
        .find(|l| l.contains("BODY.PEEK"))
        .unwrap();
    assert!(fetch.starts_with("UID FETCH 1 "), "{fetch}");
    retr(&mut pop, 3, 3).await;
}

#[tokio::test]
async fn a_message_expunged_by_another_client_is_reported() {
    let peer = Peer::with_messages(3);
    let (gw, mut pop) = Gateway::new(peer.clone()).await;
    pop.login().await;
    peer.0.lock().unwrap().messages.remove(1);
    retr(&mut pop, 1, 1).await;
    assert_eq!(
        pop.cmd("RETR 2").await,
        "-ERR Message was removed from the mailbox by another client."
    );
    retr(&mut pop, 3, 3).await;
    assert_eq!(
        pop.cmd("RETR 2").await,
        "-ERR Message was removed from the mailbox by another client."
    );
    assert_eq!(
        gw.peer.count("UID FETCH 2 "),
        1,
        "refetched once on its own"
    );
}

#[tokio::test]
async fn a_refused_body_fetch_is_an_error_for_that_message() {
    let peer = Peer::with_messages(2);
    peer.set(|b| {
        b.refuse
            .push(("BODY.PEEK".into(), "NO [SERVERBUG] cannot".into()))
    });
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    assert_eq!(pop.cmd("RETR 1").await, "-ERR Message cannot be read now.");
    retr(&mut pop, 1, 1).await;
}

#[tokio::test]
async fn bodies_in_reverse_order_are_matched_by_uid() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.reverse_bodies = true);
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    for n in 1..=3 {
        retr(&mut pop, n, n).await;
    }
}

#[tokio::test]
async fn an_unsolicited_body_is_skipped() {
    let peer = Peer::with_messages(4);
    peer.set(|b| b.unsolicited_body = Some(4));
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.cmd("DELE 4").await;
    for n in 1..=3 {
        retr(&mut pop, n, n).await;
    }
}

#[tokio::test]
async fn a_body_missing_from_a_batch_is_fetched_on_its_own() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.omit_in_batch = Some(2));
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    for n in 1..=3 {
        retr(&mut pop, n, n).await;
    }
    assert_eq!(gw.peer.count("UID FETCH 2 "), 1, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn the_uid_may_follow_the_body() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.uid_after_body = true);
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    retr(&mut pop, 1, 1).await;
    retr(&mut pop, 3, 3).await;
}

#[tokio::test]
async fn large_messages_stream_whole() {
    let peer = Peer::default();
    peer.add(1, body(1, 20_000));
    peer.add(2, body(2, 3));
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    let want = body(1, 20_000);
    assert_eq!(
        pop.cmd("RETR 1").await,
        format!("+OK {} octets", want.len())
    );
    assert_eq!(pop.body().await, want);
    retr(&mut pop, 2, 2).await;
}

#[tokio::test]
async fn a_batch_the_server_ends_with_expungeissued_does_not_stop_the_session() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.expunge_issued = true);
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    retr(&mut pop, 1, 1).await;
    assert_eq!(pop.cmd("DELE 1").await, "+OK Marked to be deleted.");
    // QUIT reads the rest of the batch first, its NO included.
    assert!(
        pop.cmd("QUIT").await.starts_with("+OK"),
        "{:?}",
        gw.peer.log()
    );
    let peer = gw.peer.clone();
    assert!(gw.finished().await);
    assert_eq!(peer.uids(), vec![2, 3]);
}

/// The lines `command` answers with for a one-message mailbox holding
/// `message`, under `client_workarounds: workarounds`.
async fn lines_with_workarounds(workarounds: &str, message: &[u8], command: &str) -> Vec<String> {
    let peer = Peer::default();
    peer.add(1, message.to_vec());
    let cfg = config(&format!("client_workarounds: {workarounds}\n"));
    let (_gw, mut pop) = Gateway::with(peer, cfg).await;
    pop.login().await;
    assert!(pop.cmd(command).await.starts_with("+OK"));
    pop.multi().await
}

#[tokio::test]
async fn nuls_are_replaced_only_for_the_outlook_workaround() {
    // 0x80 arrives as U+FFFD here, the client reading lines as UTF-8.
    for (workarounds, want) in [("[]", "a\0b"), ("[outlook-no-nuls]", "a\u{FFFD}b")] {
        let lines =
            lines_with_workarounds(workarounds, b"Subject: nul\r\n\r\na\0b\r\n", "RETR 1").await;
        assert_eq!(
            lines.last().map(String::as_str),
            Some(want),
            "{workarounds}"
        );
    }
}

#[tokio::test]
async fn a_header_without_an_end_gets_one_only_for_the_oe_ns_workaround() {
    let message = b"Subject: no body\r\nFrom: a@example.org\r\n";
    for (workarounds, blank_added) in [("[]", false), ("[oe-ns-eoh]", true)] {
        let lines = lines_with_workarounds(workarounds, message, "TOP 1 0").await;
        assert_eq!(
            lines.last().is_some_and(String::is_empty),
            blank_added,
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2 + usize::from(blank_added), "{workarounds}");
    }
    // A header that ended keeps its one empty line.
    let whole = b"Subject: body\r\n\r\ntext\r\n";
    let lines = lines_with_workarounds("[oe-ns-eoh]", whole, "TOP 1 0").await;
    assert_eq!(lines, ["Subject: body", ""]);
}
