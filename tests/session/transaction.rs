//! TRANSACTION state: the maildrop commands and pipelining.

use super::{body, Gateway, Logs, Peer, PASSWORD};

/// Octets of the standard test message `n`.
fn size(n: u32) -> usize {
    body(n, 3).len()
}

#[tokio::test]
async fn stat_counts_messages_and_octets() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    let total: usize = (1..=3).map(size).sum();
    assert_eq!(pop.cmd("STAT").await, format!("+OK 3 {total}"));
}

#[tokio::test]
async fn list_all_and_one() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    assert_eq!(pop.cmd("LIST").await, "+OK 2 messages:");
    assert_eq!(
        pop.multi().await,
        vec![format!("1 {}", size(1)), format!("2 {}", size(2))]
    );
    assert_eq!(pop.cmd("LIST 2").await, format!("+OK 2 {}", size(2)));
}

#[tokio::test]
async fn list_of_a_missing_message_is_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    assert_eq!(pop.cmd("LIST 3").await, "-ERR No such message.");
    assert_eq!(pop.cmd("LIST 0").await, "-ERR Invalid message number.");
}

#[tokio::test]
async fn uidl_names_messages_by_uid_and_validity() {
    let peer = Peer::default();
    peer.add(7, body(7, 1));
    peer.add(300, body(300, 1));
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    assert_eq!(pop.cmd("UIDL").await, "+OK");
    assert_eq!(
        pop.multi().await,
        vec!["1 000000070000002a", "2 0000012c0000002a"]
    );
    assert_eq!(pop.cmd("UIDL 2").await, "+OK 2 0000012c0000002a");
}

#[tokio::test]
async fn dele_hides_the_message_until_quit() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    assert_eq!(pop.cmd("DELE 2").await, "+OK Marked to be deleted.");
    assert_eq!(pop.cmd("LIST").await, "+OK 2 messages:");
    let listed = pop.multi().await;
    assert!(
        listed[0].starts_with("1 ") && listed[1].starts_with("3 "),
        "{listed:?}"
    );
    assert_eq!(pop.cmd("LIST 2").await, "-ERR Message is deleted.");
    assert_eq!(pop.cmd("RETR 2").await, "-ERR Message is deleted.");
    assert_eq!(pop.cmd("DELE 2").await, "-ERR Message is deleted.");
    assert_eq!(
        gw.peer.flagged(|m| m.deleted),
        Vec::<u32>::new(),
        "not before QUIT"
    );
}

#[tokio::test]
async fn rset_unmarks_deletions() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    pop.cmd("DELE 1").await;
    assert_eq!(pop.cmd("RSET").await, "+OK");
    assert!(pop.cmd("STAT").await.starts_with("+OK 2 "));
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert_eq!(gw.peer.uids(), vec![1, 2]);
}

#[tokio::test]
async fn noop_after_login() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.login().await;
    assert_eq!(pop.cmd("NOOP").await, "+OK");
}

#[tokio::test]
async fn login_commands_after_login_are_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.login().await;
    for c in [
        "USER alice",
        "PASS x",
        "AUTH PLAIN",
        "APOP a 0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(pop.cmd(c).await, "-ERR Already logged in.", "{c}");
    }
    assert_eq!(pop.cmd("STLS").await, "-ERR STLS is not available now.");
}

#[tokio::test]
async fn capa_after_login_omits_login_mechanisms() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.login().await;
    pop.cmd("CAPA").await;
    let caps = pop.multi().await;
    assert!(caps.iter().any(|l| l == "UIDL"));
    assert!(
        !caps.iter().any(|l| l == "USER" || l.starts_with("SASL")),
        "{caps:?}"
    );
}

#[tokio::test]
async fn messages_flagged_deleted_upstream_are_hidden() {
    let peer = Peer::with_messages(3);
    peer.0.lock().unwrap().messages[1].deleted = true;
    let (_gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    assert_eq!(
        pop.cmd("STAT").await,
        format!("+OK 2 {}", size(1) + size(3))
    );
    assert_eq!(pop.cmd("UIDL 2").await, "+OK 2 000000030000002a");
}

#[tokio::test]
async fn an_empty_mailbox() {
    let (_gw, mut pop) = Gateway::new(Peer::default()).await;
    pop.login().await;
    assert_eq!(pop.cmd("STAT").await, "+OK 0 0");
    assert_eq!(pop.cmd("LIST").await, "+OK 0 messages:");
    assert!(pop.multi().await.is_empty());
    assert_eq!(pop.cmd("RETR 1").await, "-ERR No such message.");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.send_raw(b"USER alice\r\nPASS secret\r\nSTAT\r\nDELE 1\r\nLIST 1\r\nNOOP\r\n")
        .await;
    assert_eq!(pop.line().await, "+OK");
    assert_eq!(pop.line().await, "+OK Logged in.");
    assert!(pop.line().await.starts_with("+OK 2 "));
    assert_eq!(pop.line().await, "+OK Marked to be deleted.");
    assert_eq!(pop.line().await, "-ERR Message is deleted.");
    assert_eq!(pop.line().await, "+OK");
    assert_eq!(gw.commands("DELE", "ok"), 1);
}

#[tokio::test]
async fn pipelined_retrievals_stream_in_order() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    pop.send_raw(b"RETR 1\r\nTOP 2 0\r\nRETR 3\r\nQUIT\r\n")
        .await;
    assert_eq!(pop.line().await, format!("+OK {} octets", size(1)));
    assert_eq!(pop.body().await, body(1, 3));
    assert_eq!(pop.line().await, "+OK");
    assert_eq!(
        pop.body().await,
        b"Subject: message 2\r\nFrom: a@example.org\r\n\r\n".to_vec()
    );
    assert_eq!(pop.line().await, format!("+OK {} octets", size(3)));
    assert_eq!(pop.body().await, body(3, 3));
    assert_eq!(pop.line().await, "+OK Logging out.");
}

#[tokio::test]
async fn a_command_split_over_writes_is_read_whole() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.login().await;
    pop.send_raw(b"ST").await;
    pop.send_raw(b"AT\r\n").await;
    assert!(pop.line().await.starts_with("+OK 1 "));
}

#[tokio::test]
async fn the_log_lines_count_the_messages_and_what_was_sent() {
    let (logs, _guard) = Logs::capture();
    let (gw, mut pop) = Gateway::new(Peer::with_messages(3)).await;
    pop.login().await;
    for n in [1, 3] {
        assert!(pop.cmd(&format!("RETR {n}")).await.starts_with("+OK"));
        pop.body().await;
    }
    assert!(pop.cmd("QUIT").await.starts_with("+OK"));
    assert!(gw.finished().await);
    let text = logs.text();
    let login = text.lines().find(|l| l.contains("logged in"));
    assert!(login.is_some_and(|l| l.contains(" messages=3 ")), "{text}");
    let line = text.lines().find(|l| l.contains("session closed"));
    let line = line.unwrap_or_else(|| panic!("no session line in {text}"));
    let bytes = size(1) + size(3);
    assert!(
        line.contains(&format!("retrieved=2 deleted=0 bytes={bytes} ")),
        "{line}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}
