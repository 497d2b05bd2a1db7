//! What a login meets before its credentials are checked: slots counted
//! only for proven users, unfit names and client-named master users
//! refused without asking the upstream, the penalty waited out first, and
//! one login deadline.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{
    config, config_limits, Gateway, Peer, Pop, MASTER, MASTER_PASSWORD, OTHER, OTHER_PASSWORD,
    PASSWORD, USER,
};

#[tokio::test]
async fn a_wrong_password_hears_auth_even_while_the_user_is_logged_in() {
    let cfg = config("session:\n  exclusive: true\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    pop.login().await;
    let (_gw2, mut stranger) = gw.another().await;
    stranger.cmd(&format!("USER {USER}")).await;
    assert_eq!(
        stranger.cmd("PASS wrong").await,
        "-ERR [AUTH] Authentication failed."
    );
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
}

#[tokio::test]
async fn unfit_names_never_reach_the_upstream() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.cmd(&format!("USER {}", "n".repeat(256))).await;
    assert!(pop.cmd("PASS x").await.starts_with("-ERR [AUTH]"));
    let plain = B64.encode(format!("\0{USER}\nlogged in user=admin\0{PASSWORD}"));
    let answer = pop.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    assert_eq!(gw.peer.connections(), 0);
}

#[tokio::test]
async fn clients_naming_the_master_user_are_refused_unless_allowed() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.cmd(&format!("USER {USER}*{MASTER}")).await;
    let answer = pop.cmd(&format!("PASS {MASTER_PASSWORD}")).await;
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    let plain = B64.encode(format!("{USER}\0{MASTER}\0{MASTER_PASSWORD}"));
    let answer = pop.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    assert_eq!(gw.peer.connections(), 0);

    let cfg = config("auth:\n  client_master_login: true\n");
    let (_gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert_eq!(
        pop.cmd(&format!("AUTH PLAIN {plain}")).await,
        "+OK Logged in."
    );
}

#[tokio::test(start_paused = true)]
async fn the_login_deadline_covers_a_sasl_exchange() {
    let cfg = config_limits("  login_timeout: 5s\n", "session:\n  idle_timeout: 1h\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert!(pop.cmd("AUTH LOGIN").await.starts_with("+ "));
    assert_eq!(
        pop.line().await,
        "-ERR No login within the time allowed, closing."
    );
    assert!(pop.closed().await);
    assert!(gw.finished().await);
}

/// A gateway whose penalty grows to `max_secs`, after two failed logins
/// as `USER` on one connection, still open.
async fn after_two_failures(max_secs: u64) -> (Gateway, Pop) {
    let mut cfg = config("");
    cfg.limits.auth_penalty_max = std::time::Duration::from_secs(max_secs);
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    for _ in 0..2 {
        pop.cmd(&format!("USER {USER}")).await;
        assert!(pop.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    }
    (gw, pop)
}

#[tokio::test(start_paused = true)]
async fn a_correct_password_waits_out_the_penalty_before_it_is_checked() {
    let (gw, _pop) = after_two_failures(4).await;
    let (_gw2, mut other) = gw.another().await;
    other.cmd(&format!("USER {USER}")).await;
    let start = tokio::time::Instant::now();
    assert_eq!(
        other.cmd(&format!("PASS {PASSWORD}")).await,
        "+OK Logged in."
    );
    // Two failures: a 2 s step, waited before the check.
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_login_clears_the_penalty_of_its_address() {
    let (gw, _pop) = after_two_failures(8).await;
    // Another user from the same address waits out the address's penalty
    // once; the login clears it, so the next one does not wait.
    let waits = |g: &Gateway| {
        g.ctx
            .metrics
            .auth_throttled
            .with_label_values(&["ip"])
            .get()
    };
    let before = waits(&gw);
    for _ in 0..2 {
        let (_g, mut bob) = gw.another().await;
        bob.cmd(&format!("USER {OTHER}")).await;
        assert_eq!(
            bob.cmd(&format!("PASS {OTHER_PASSWORD}")).await,
            "+OK Logged in."
        );
        assert_eq!(waits(&gw), before + 1);
    }
}

#[tokio::test]
async fn digest_logins_need_tls_outside_the_plaintext_networks() {
    let (mut cfg, _secrets) = super::config_with_credentials("no-plaintext");
    cfg.auth.plaintext_networks.clear();
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert!(!gw.greeting.contains('<'), "no APOP timestamp");
    assert_eq!(pop.cmd("AUTH").await, "+OK");
    assert!(pop.multi().await.is_empty(), "no mechanism offered");
    let answer = pop.cmd(&format!("APOP {USER} {}", "0".repeat(32))).await;
    assert!(answer.starts_with("-ERR [AUTH] Plaintext"), "{answer}");
    assert!(pop
        .cmd("AUTH CRAM-MD5")
        .await
        .starts_with("-ERR [AUTH] Plaintext"));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_beyond_the_queue_is_refused_and_counts_as_a_failure() {
    let limits = "  auth_attempts_queued_per_user: 1\n  auth_failures_per_connection: 1\n";
    let mut cfg = config_limits(limits, "");
    cfg.limits.auth_penalty_max = std::time::Duration::from_secs(8);
    let (gw, _pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    // Two failures, each on a connection of its own: the next attempt
    // waits 2 s.
    for _ in 0..2 {
        let (_g, mut failing) = gw.another().await;
        failing.cmd(&format!("USER {USER}")).await;
        assert!(failing.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    }
    let throttled = |g: &Gateway| {
        let m = &g.ctx.metrics.auth_throttled;
        m.with_label_values(&["ip"]).get() + m.with_label_values(&["user"]).get()
    };
    let (_g, mut waiting) = gw.another().await;
    waiting.cmd(&format!("USER {USER}")).await;
    waiting.send(&format!("PASS {PASSWORD}")).await;
    for _ in 0..10_000 {
        if throttled(&gw) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        throttled(&gw),
        1,
        "the second attempt waits out the penalty"
    );
    // The queue of one is taken: the next attempt is refused at once, and
    // that refusal is this connection's one failure allowed.
    let (_g, mut crowded) = gw.another().await;
    crowded.cmd(&format!("USER {USER}")).await;
    assert_eq!(
        crowded.cmd(&format!("PASS {PASSWORD}")).await,
        "-ERR [SYS/TEMP] Too many login attempts, try again later."
    );
    assert!(crowded.closed().await, "the failure limit closes it");
    assert_eq!(waiting.line().await, "+OK Logged in.");
}

#[tokio::test]
async fn each_user_has_session_slots_of_their_own() {
    // An empty master separator names no master user: names are not split.
    for separator in ["*", ""] {
        let cfg = config_limits(
            "  sessions_per_user: 1\n",
            &format!("auth:\n  master_separator: \"{separator}\"\n  client_master_login: true\n"),
        );
        let (gw, mut alice) = Gateway::with(Peer::with_messages(1), cfg).await;
        alice.login().await;
        let (_again, mut again) = gw.another().await;
        again.cmd(&format!("USER {USER}")).await;
        let answer = again.cmd(&format!("PASS {PASSWORD}")).await;
        assert!(answer.starts_with("-ERR [IN-USE]"), "{answer}");
        if !separator.is_empty() {
            // The master user logging in for alice is alice.
            let (_master, mut master) = gw.another().await;
            master.cmd(&format!("USER {USER}*{MASTER}")).await;
            let answer = master.cmd(&format!("PASS {MASTER_PASSWORD}")).await;
            assert!(answer.starts_with("-ERR [IN-USE]"), "{answer}");
        }
        let (_bob, mut bob) = gw.another().await;
        bob.cmd(&format!("USER {OTHER}")).await;
        assert_eq!(
            bob.cmd(&format!("PASS {OTHER_PASSWORD}")).await,
            "+OK Logged in.",
            "separator {separator:?}"
        );
    }
}
