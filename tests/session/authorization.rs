//! AUTHORIZATION state: every command, login refusals and their codes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use md5::{Digest, Md5};

use super::{config, config_limits, config_with_credentials, Gateway, Peer, PASSWORD, USER};

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

#[tokio::test]
async fn capa_before_login_offers_user_and_sasl() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("CAPA").await, "+OK Capability list follows");
    let caps = pop.multi().await;
    for c in [
        "TOP",
        "UIDL",
        "USER",
        "PIPELINING",
        "RESP-CODES",
        "SASL PLAIN LOGIN",
    ] {
        assert!(caps.iter().any(|l| l == c), "{c} missing from {caps:?}");
    }
    assert!(
        !caps.iter().any(|l| l == "STLS"),
        "no STLS on a plain listener"
    );
}

#[tokio::test]
async fn user_and_pass_log_in() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(2)).await;
    pop.login().await;
    assert_eq!(pop.cmd("STAT").await.split(' ').nth(1), Some("2"));
    assert_eq!(
        gw.ctx
            .metrics
            .logins
            .with_label_values(&["USER", "ok"])
            .get(),
        1
    );
}

#[tokio::test]
async fn wrong_password_is_refused_with_auth_code() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd(&format!("USER {USER}")).await, "+OK");
    assert_eq!(
        pop.cmd("PASS nope").await,
        "-ERR [AUTH] Authentication failed."
    );
    assert_eq!(pop.cmd("STAT").await, "-ERR Not logged in.");
    assert_eq!(
        gw.ctx
            .metrics
            .logins
            .with_label_values(&["USER", "auth_failed"])
            .get(),
        1
    );
}

#[tokio::test]
async fn a_refused_login_can_be_retried() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.cmd(&format!("USER {USER}")).await;
    assert!(pop.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    pop.login().await;
}

#[tokio::test]
async fn pass_without_user_is_refused() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(
        pop.cmd("PASS x").await,
        "-ERR No user name given; send USER first."
    );
    assert_eq!(gw.peer.connections(), 0, "nothing asked upstream");
}

#[tokio::test]
async fn maildrop_commands_need_a_login() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    for c in [
        "STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "RSET",
    ] {
        assert_eq!(pop.cmd(c).await, "-ERR Not logged in.", "{c}");
    }
}

#[tokio::test]
async fn noop_before_login() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("NOOP").await, "+OK");
}

#[tokio::test]
async fn quit_before_login_touches_no_upstream() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
    assert!(pop.closed().await);
    assert_eq!(gw.peer.connections(), 0);
    assert_eq!(gw.outcomes("quit"), 1);
}

#[tokio::test]
async fn unknown_commands_are_refused_then_the_session_goes_on() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("XYZZY").await, "-ERR Unknown command.");
    assert_eq!(pop.cmd("NOOP").await, "+OK");
    assert_eq!(gw.commands("unparsable", "err"), 1);
}

#[tokio::test]
async fn too_many_bad_commands_close_the_connection() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    for _ in 0..19 {
        assert_eq!(pop.cmd("BOGUS").await, "-ERR Unknown command.");
    }
    assert_eq!(pop.cmd("BOGUS").await, "-ERR Unknown command.");
    assert_eq!(pop.line().await, "-ERR Too many bad commands, closing.");
    assert!(pop.closed().await);
    assert!(gw.finished().await);
}

#[tokio::test]
async fn an_overlong_line_is_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    let long = format!("USER {}", "x".repeat(9000));
    assert_eq!(pop.cmd(&long).await, "-ERR Line too long.");
    assert_eq!(pop.cmd("NOOP").await, "+OK");
}

#[tokio::test]
async fn auth_plain_with_initial_response() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    let line = format!("AUTH PLAIN {}", plain(USER, PASSWORD));
    assert_eq!(pop.cmd(&line).await, "+OK Logged in.");
    assert_eq!(
        gw.ctx
            .metrics
            .logins
            .with_label_values(&["PLAIN", "ok"])
            .get(),
        1
    );
}

#[tokio::test]
async fn auth_plain_after_a_challenge() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(pop.cmd(&plain(USER, PASSWORD)).await, "+OK Logged in.");
}

#[tokio::test]
async fn auth_login_exchange() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert!(pop.cmd("AUTH LOGIN").await.starts_with("+ "));
    assert!(pop.cmd(&B64.encode(USER)).await.starts_with("+ "));
    assert_eq!(pop.cmd(&B64.encode(PASSWORD)).await, "+OK Logged in.");
}

#[tokio::test]
async fn auth_cancelled_by_the_client() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(pop.cmd("*").await, "-ERR Authentication cancelled.");
    pop.login().await;

    // A challenge-response mechanism reads its answer apart.
    let (cfg, _secrets) = config_with_credentials("cram-cancel");
    let (_gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert!(pop.cmd("AUTH CRAM-MD5").await.starts_with("+ "));
    assert_eq!(pop.cmd("*").await, "-ERR Authentication cancelled.");
    pop.login().await;
}

#[tokio::test]
async fn auth_with_bad_credentials_has_the_auth_code() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    let line = format!("AUTH PLAIN {}", plain(USER, "bad"));
    assert_eq!(pop.cmd(&line).await, "-ERR [AUTH] Authentication failed.");
}

#[tokio::test]
async fn auth_without_mechanism_lists_them() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("AUTH").await, "+OK");
    assert_eq!(pop.multi().await, vec!["PLAIN", "LOGIN"]);
}

#[tokio::test]
async fn unsupported_mechanism_is_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(
        pop.cmd("AUTH GSSAPI").await,
        "-ERR Unsupported authentication mechanism."
    );
}

#[tokio::test]
async fn apop_without_a_credentials_file_is_refused() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(
        pop.cmd("APOP alice 0123456789abcdef0123456789abcdef").await,
        "-ERR APOP is not available."
    );
}

#[tokio::test]
async fn stls_is_refused_on_a_plain_listener() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    assert_eq!(pop.cmd("STLS").await, "-ERR STLS is not available now.");
}

#[tokio::test]
async fn passwords_need_tls_outside_trusted_networks() {
    let cfg = config("auth:\n  plaintext_networks: []\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    let answer = pop.cmd("USER alice").await;
    assert!(
        answer.starts_with("-ERR [AUTH] Plaintext authentication disallowed"),
        "{answer}"
    );
    pop.send("CAPA").await;
    pop.line().await;
    let caps = pop.multi().await;
    assert!(
        !caps.iter().any(|l| l == "USER" || l.starts_with("SASL")),
        "{caps:?}"
    );
    assert_eq!(gw.peer.connections(), 0);
}

#[tokio::test]
async fn repeated_failures_close_the_connection() {
    let (gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    for _ in 0..3 {
        pop.cmd("USER alice").await;
        assert!(pop.cmd("PASS wrong").await.starts_with("-ERR [AUTH]"));
    }
    assert!(pop.closed().await);
    assert!(gw.finished().await);
}

#[tokio::test]
async fn a_second_session_of_one_user_is_refused_when_limited() {
    let cfg = config("session:\n  exclusive: true\n");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    pop.login().await;
    let (_gw2, mut second) = gw.another().await;
    second.cmd("USER alice").await;
    assert_eq!(
        second.cmd(&format!("PASS {PASSWORD}")).await,
        "-ERR [IN-USE] Mailbox is in use by another POP3 session."
    );
    assert_eq!(pop.cmd("QUIT").await, "+OK Logging out.");
}

#[tokio::test(start_paused = true)]
async fn no_login_within_the_time_allowed_closes() {
    let cfg = config_limits("  login_timeout: 5s\n", "");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert_eq!(
        pop.line().await,
        "-ERR No login within the time allowed, closing."
    );
    assert!(pop.closed().await);
    assert!(gw.finished().await);
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn apop_logs_in_through_the_master_user() {
    let (cfg, _secrets) = config_with_credentials("apop");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(2), cfg).await;
    let start = gw.greeting.find('<').expect("an APOP timestamp");
    let timestamp = &gw.greeting[start..];
    let digest = md5_hex(format!("{timestamp}{PASSWORD}").as_bytes());
    assert_eq!(
        pop.cmd(&format!("APOP {USER} {digest}")).await,
        "+OK Logged in."
    );
    assert!(pop.cmd("STAT").await.starts_with("+OK 2 "));
}

#[tokio::test]
async fn apop_with_a_wrong_digest_is_refused_without_asking_upstream() {
    let (cfg, _secrets) = config_with_credentials("apop-bad");
    let (gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    assert_eq!(
        pop.cmd(&format!("APOP {USER} 0123456789abcdef0123456789abcdef"))
            .await,
        "-ERR [AUTH] Authentication failed."
    );
    assert_eq!(gw.peer.connections(), 0);
}

#[tokio::test]
async fn cram_md5_logs_in() {
    let (cfg, _secrets) = config_with_credentials("cram");
    let (_gw, mut pop) = Gateway::with(Peer::with_messages(1), cfg).await;
    let challenge = pop.cmd("AUTH CRAM-MD5").await;
    let challenge = B64.decode(challenge.strip_prefix("+ ").unwrap()).unwrap();
    let mut key = [0u8; 64];
    key[..PASSWORD.len()].copy_from_slice(PASSWORD.as_bytes());
    let inner: Vec<u8> = key.iter().map(|b| b ^ 0x36).chain(challenge).collect();
    let mut outer: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&Md5::digest(&inner));
    let answer = B64.encode(format!("{USER} {}", md5_hex(&outer)));
    assert_eq!(pop.cmd(&answer).await, "+OK Logged in.");
}

#[tokio::test]
async fn capa_announces_login_delay_and_expire_only_when_set() {
    let (_gw, mut pop) = Gateway::new(Peer::with_messages(1)).await;
    pop.cmd("CAPA").await;
    let caps = pop.multi().await;
    assert!(
        !caps
            .iter()
            .any(|l| l.starts_with("LOGIN-DELAY") || l.starts_with("EXPIRE")),
        "{caps:?}"
    );
    let set = config("policy:\n  login_delay: 30s\n  expire: 7\n");
    let (_gw, mut pop) = Gateway::with(Peer::with_messages(1), set).await;
    pop.cmd("CAPA").await;
    let caps = pop.multi().await;
    for c in ["LOGIN-DELAY 30", "EXPIRE 7"] {
        assert!(caps.iter().any(|l| l == c), "{c} missing from {caps:?}");
    }
}

#[tokio::test]
async fn the_clients_address_goes_upstream_only_when_forwarded_and_offered() {
    // (forward_client_ip, the server offers ID, ID commands sent)
    for (forward, offered, sent) in [(true, true, 1), (false, true, 0), (true, false, 0)] {
        let peer = Peer::with_messages(1);
        if !offered {
            peer.set(|b| b.caps = b.caps.replace(" ID ", " "));
        }
        let mut cfg = config("");
        cfg.upstream.forward_client_ip = forward;
        let (gw, mut pop) = Gateway::with(peer, cfg).await;
        pop.login().await;
        assert_eq!(
            gw.peer.count("x-originating-ip"),
            sent,
            "forward {forward}, offered {offered}: {:?}",
            gw.peer.log()
        );
    }
}
