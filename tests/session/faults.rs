//! Failures: the upstream refusing or dropping at each step, the client
//! leaving mid-answer, idling, and shutdown.

use super::{body, config_limits, Gateway, Peer, PASSWORD, USER};

pub const UNAVAILABLE: &str = "-ERR [SYS/TEMP] Mail server unavailable, try again later.";

/// Tries to log in against `peer` and returns the answer to PASS.
async fn login_answer(peer: Peer) -> (Gateway, String) {
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.cmd("USER alice").await;
    let answer = pop.cmd(&format!("PASS {PASSWORD}")).await;
    (gw, answer)
}

#[tokio::test]
async fn a_server_that_greets_with_bye_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.greeting = Some("* BYE [UNAVAILABLE] maintenance".into()));
    let (gw, answer) = login_answer(peer).await;
    assert_eq!(answer, UNAVAILABLE);
    assert_eq!(
        gw.ctx
            .metrics
            .logins
            .with_label_values(&["USER", "upstream_unavailable"])
            .get(),
        1
    );
}

#[tokio::test]
async fn a_garbled_greeting_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.greeting = Some("HELLO THERE".into()));
    assert_eq!(login_answer(peer).await.1, UNAVAILABLE);
}

#[tokio::test]
async fn a_server_that_greets_preauthenticated_is_not_trusted() {
    // PREAUTH would open a mailbox without the user's password.
    let peer = Peer::with_messages(1);
    peer.set(|b| b.greeting = Some("* PREAUTH [CAPABILITY IMAP4rev1] as alice".into()));
    let (gw, answer) = login_answer(peer).await;
    assert_eq!(answer, UNAVAILABLE);
    assert_eq!(gw.peer.count("SELECT"), 0, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn a_drop_after_the_client_address_is_sent_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.drop_at = Some("x-originating-ip".into()));
    let (gw, answer) = login_answer(peer).await;
    assert_eq!(answer, UNAVAILABLE);
    assert_eq!(gw.peer.count("x-originating-ip"), 1, "{:?}", gw.peer.log());
}

#[tokio::test]
async fn a_drop_at_login_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.drop_at = Some("AUTHENTICATE".into()));
    assert_eq!(login_answer(peer).await.1, UNAVAILABLE);
}

#[tokio::test]
async fn a_drop_at_select_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.drop_at = Some("SELECT".into()));
    assert_eq!(login_answer(peer).await.1, UNAVAILABLE);
}

#[tokio::test]
async fn a_drop_at_the_snapshot_is_unavailable() {
    let peer = Peer::with_messages(1);
    peer.set(|b| b.drop_at = Some("RFC822.SIZE".into()));
    assert_eq!(login_answer(peer).await.1, UNAVAILABLE);
}

#[tokio::test]
async fn login_refusals_keep_their_meaning() {
    for (code, want) in [
        ("UNAVAILABLE", UNAVAILABLE),
        ("INUSE", "-ERR [IN-USE] Mailbox is in use."),
        ("AUTHENTICATIONFAILED", "-ERR [AUTH] Authentication failed."),
    ] {
        let peer = Peer::with_messages(1);
        let refusal = format!("NO [{code}] no");
        peer.refuse("AUTHENTICATE", &refusal);
        assert_eq!(login_answer(peer).await.1, want, "{code}");
    }
}

#[tokio::test]
async fn select_refusals_keep_their_meaning() {
    for (code, want) in [
        ("NONEXISTENT", "-ERR [SYS/PERM] Mailbox does not exist."),
        ("INUSE", "-ERR [IN-USE] Mailbox is in use."),
        ("SERVERBUG", UNAVAILABLE),
    ] {
        let peer = Peer::with_messages(1);
        let refusal = format!("NO [{code}] no");
        peer.refuse("SELECT", &refusal);
        let (gw, answer) = login_answer(peer).await;
        assert_eq!(answer, want, "{code}");
        assert_eq!(gw.peer.connections(), 1);
    }
}

#[tokio::test]
async fn a_drop_at_the_body_fetch_closes_the_session() {
    let peer = Peer::with_messages(2);
    peer.set(|b| b.drop_at = Some("BODY.PEEK".into()));
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.send("RETR 1").await;
    assert!(pop.closed().await, "closing is how the client is told");
    let ctx = gw.ctx.clone();
    assert!(gw.finished().await);
    let failures = ctx
        .metrics
        .sessions
        .with_label_values(&["test", "none", "upstream_failure"]);
    assert_eq!(failures.get(), 1);
    let upstream = ctx
        .metrics
        .upstream_failures
        .with_label_values(&["default", "closed"]);
    assert_eq!(
        upstream.get(),
        1,
        "the lost link is counted against its route"
    );
}

#[tokio::test]
async fn a_drop_in_the_middle_of_a_body_closes_the_session() {
    let peer = Peer::default();
    peer.add(1, body(1, 2000));
    peer.set(|b| b.drop_in_body = Some(5000));
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.send("RETR 1").await;
    assert!(pop.line().await.starts_with("+OK"));
    assert!(pop.closed().await);
    let peer = gw.peer.clone();
    assert!(gw.finished().await);
    assert_eq!(peer.uids(), vec![1]);
}

#[tokio::test]
async fn a_garbled_batch_read_at_quit_deletes_nothing() {
    let peer = Peer::with_messages(3);
    peer.set(|b| b.junk_in_batch = true);
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    pop.body().await;
    assert_eq!(pop.cmd("DELE 1").await, "+OK Marked to be deleted.");
    // QUIT reads the rest of the batch first; past a line it cannot parse,
    // the link is out of step and nothing more is sent on it.
    assert!(pop.cmd("QUIT").await.starts_with("-ERR"));
    let (peer, ctx) = (gw.peer.clone(), gw.ctx.clone());
    assert!(gw.finished().await);
    assert_eq!(peer.count("STORE"), 0, "{:?}", peer.log());
    assert_eq!(peer.uids(), vec![1, 2, 3]);
    let upstream = &ctx.metrics.upstream_failures;
    assert_eq!(
        upstream.with_label_values(&["default", "protocol"]).get(),
        1
    );
}

#[tokio::test]
async fn a_client_leaving_in_the_middle_of_a_retr_is_no_panic() {
    let peer = Peer::default();
    peer.add(1, body(1, 40_000));
    peer.add(2, body(2, 3));
    let (gw, mut pop) = Gateway::new(peer).await;
    pop.login().await;
    pop.cmd("DELE 2").await;
    pop.send("RETR 1").await;
    for _ in 0..50 {
        pop.line().await;
    }
    drop(pop);
    let peer = gw.peer.clone();
    assert!(gw.finished().await, "the session task must not panic");
    assert_eq!(peer.uids(), vec![1, 2]);
    assert_eq!(peer.flagged(|m| m.deleted || m.seen), Vec::<u32>::new());
}

#[tokio::test]
async fn a_client_leaving_between_batched_bodies_is_no_panic() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(6)).await;
    pop.login().await;
    pop.cmd("RETR 1").await;
    pop.body().await;
    drop(pop);
    assert!(gw.finished().await);
}

#[tokio::test]
async fn a_session_is_counted_open_for_as_long_as_it_lasts() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    let ctx = gw.ctx.clone();
    let open = || {
        ctx.metrics
            .sessions_open
            .with_label_values(&["test", "none"])
            .get()
    };
    assert_eq!(open(), 1);
    pop.login().await;
    pop.cmd("QUIT").await;
    assert!(gw.finished().await);
    assert_eq!(open(), 0);
}

#[tokio::test]
async fn shutdown_closes_a_session_without_applying_it() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    pop.cmd("DELE 1").await;
    gw.force_close();
    assert!(pop.closed().await);
    let peer = gw.peer.clone();
    let ctx = gw.ctx.clone();
    assert!(gw.finished().await);
    assert_eq!(peer.uids(), vec![1, 2]);
    assert_eq!(peer.flagged(|m| m.deleted), Vec::<u32>::new());
    let shut = ctx
        .metrics
        .sessions
        .with_label_values(&["test", "none", "shutdown"]);
    assert_eq!(shut.get(), 1);
}

#[tokio::test]
async fn shutdown_before_login_closes_too() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    gw.force_close();
    assert!(pop.closed().await);
    assert!(gw.finished().await);
}

#[tokio::test]
async fn shutdown_does_not_cut_a_running_quit_short() {
    // The QUIT is already being answered when the drain ends: its UPDATE
    // either ran fully or the answer says it did not.
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    pop.cmd("DELE 1").await;
    let answer = pop.cmd("QUIT").await;
    gw.force_close();
    assert_eq!(answer, "+OK Logging out, messages deleted.");
    assert_eq!(gw.peer.uids(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_logged_out() {
    let cfg = super::config("session:\n  idle_timeout: 5s\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    pop.login().await;
    pop.cmd("DELE 1").await;
    assert_eq!(pop.line().await, "-ERR Autologout; idle for too long.");
    assert!(pop.closed().await);
    let peer = gw.peer.clone();
    assert!(gw.finished().await);
    assert_eq!(peer.uids(), vec![1]);
}

#[tokio::test]
async fn an_upstream_connection_limit_refuses_logins() {
    let cfg = config_limits("", "");
    let mut cfg = cfg;
    cfg.upstream.max_connections = 1;
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    pop.login().await;
    let (_gw2, mut second) = gw.another().await;
    second.cmd("USER alice").await;
    assert_eq!(second.cmd(&format!("PASS {PASSWORD}")).await, UNAVAILABLE);
}

#[tokio::test]
async fn a_server_refusing_id_still_serves_the_login() {
    // The client's address is only informative.
    let peer = Peer::with_messages(1);
    peer.refuse("ID", "NO not here");
    let (gw, answer) = login_answer(peer).await;
    assert_eq!(answer, "+OK Logged in.");
    assert_eq!(gw.peer.count("x-originating-ip"), 1);
}

#[tokio::test]
async fn a_pooled_connection_lost_at_login_gives_way_to_a_new_one() {
    let mut cfg = config_limits("", "");
    cfg.upstream.pool = 1;
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    let backend = gw.ctx.backends[popgate::config::DEFAULT_ROUTE].clone();
    let filler = tokio::spawn(popgate::gateway::pool::fill(backend));
    // The first login asks the pool for a connection: it fills after it.
    pop.login().await;
    super::until("the pool to fill", || gw.peer.connections() == 2).await;
    gw.peer.set(|b| {
        b.drop_at = Some("AUTHENTICATE".into());
        b.drop_once = true;
    });
    let (_next, mut next) = gw.another().await;
    next.cmd(&format!("USER {USER}")).await;
    assert_eq!(
        next.cmd(&format!("PASS {PASSWORD}")).await,
        "+OK Logged in."
    );
    assert_eq!(gw.peer.count("AUTHENTICATE"), 3, "{:?}", gw.peer.log());
    filler.abort();
}
