//! The client's login against scripted servers: LOGIN with literals,
//! SASL with and without an initial response, tokens passed through,
//! STARTTLS, and answers that arrive out of the expected order.

use std::time::Duration;

use super::tests::{after_unanswered_id, pair, GREETING};
use super::{Client, ClientError};
use crate::secret::Secret;

#[tokio::test]
async fn login_falls_back_to_login_with_literals() {
    let stream = pair(
        b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
        vec![
            ("A1 LOGIN \"a\\\"b\" {3}", b"+ go\r\n"),
            ("äx", b"A1 OK in\r\n"),
            (
                "A2 CAPABILITY",
                b"* CAPABILITY IMAP4rev1 LITERAL+\r\nA2 OK\r\n",
            ),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.login("", "a\"b", &Secret("äx".as_bytes().to_vec()))
        .await
        .unwrap();
    assert!(c.has_capability("LITERAL+"));
}

#[tokio::test]
async fn bearer_tokens_pass_through_and_errors_are_answered() {
    let stream = pair(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n",
        vec![
            (
                "A1 AUTHENTICATE XOAUTH2 dG9rZW4=",
                b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n",
            ),
            // RFC 7628: the client answers the error challenge with an
            // empty line, then gets the final NO.
            ("\r\n", b"A1 NO [AUTHENTICATIONFAILED] bad token\r\n"),
            (
                "A2 AUTHENTICATE XOAUTH2 Z29vZA==",
                b"A2 OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n",
            ),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let e = c
        .authenticate("XOAUTH2", &Secret(b"dG9rZW4=".to_vec()))
        .await
        .unwrap_err();
    assert!(
        e.is_refusal() && e.code() == Some("AUTHENTICATIONFAILED"),
        "{e}"
    );
    c.authenticate("XOAUTH2", &Secret(b"Z29vZA==".to_vec()))
        .await
        .unwrap();
    assert!(c.has_capability("UIDPLUS"));
}

#[tokio::test]
async fn bye_and_eof_are_errors() {
    let stream = pair(b"* BYE [UNAVAILABLE] go away\r\n", vec![]);
    let e = Client::start(stream, Duration::from_secs(5))
        .await
        .err()
        .unwrap();
    assert!(e.is_refusal() && e.code() == Some("UNAVAILABLE"), "{e}");

    let stream = pair(
        GREETING,
        vec![("A1 AUTHENTICATE", b"* BYE shutting down\r\n")],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let e = c.login("", "u", &Secret(b"p".to_vec())).await.unwrap_err();
    assert!(matches!(e, ClientError::Closed), "{e}");
}

#[tokio::test]
async fn starttls_is_sent_only_when_offered() {
    let offered = pair(
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
        vec![("A1 STARTTLS", b"A1 OK begin TLS\r\n")],
    );
    let mut c = Client::start(offered, Duration::from_secs(5))
        .await
        .unwrap();
    c.starttls().await.unwrap();

    let not_offered = pair(GREETING, vec![]);
    let mut c = Client::start(not_offered, Duration::from_secs(5))
        .await
        .unwrap();
    let e = c.starttls().await.unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
}

#[tokio::test]
async fn a_login_refused_before_the_continuation_is_a_refusal() {
    // Without SASL-IR the payload waits for "+"; a server may refuse first.
    let stream = pair(
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
        vec![(
            "A1 AUTHENTICATE PLAIN\r\n",
            b"A1 NO [AUTHENTICATIONFAILED] no\r\n",
        )],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let e = c.login("", "u", &Secret(b"p".to_vec())).await.unwrap_err();
    assert!(
        e.is_refusal() && e.code() == Some("AUTHENTICATIONFAILED"),
        "{e}"
    );
}

#[tokio::test]
async fn the_answer_to_an_earlier_command_may_come_before_the_continuation() {
    // ID is not waited for: its OK arrives while the login waits for "+".
    let stream = pair(
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready\r\n",
        vec![
            (
                "A1 ID (\"x-originating-ip\" \"192.0.2.1\")\r\n",
                b"* ID NIL\r\nA1 OK done\r\n",
            ),
            ("A2 AUTHENTICATE PLAIN\r\n", b"+ \r\n"),
            ("AHUAcA==", b"A2 OK in\r\n"),
            ("A3 CAPABILITY", b"* CAPABILITY IMAP4rev1\r\nA3 OK done\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.id(&[("x-originating-ip", "192.0.2.1".into())])
        .await
        .unwrap();
    c.login("", "u", &Secret(b"p".to_vec())).await.unwrap();
}

#[tokio::test]
async fn a_proxy_login_needs_authenticate_plain() {
    // LOGIN names one user only: the master user would get their own
    // mailbox instead of the one asked for.
    const LOGIN_ONLY: &[u8] = b"* OK [CAPABILITY IMAP4rev1] ready\r\n";
    let stream = pair(LOGIN_ONLY, vec![]);
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let pw = Secret(b"p".to_vec());
    let err = c.login("alice", "master", &pw).await.unwrap_err();
    assert!(err.to_string().contains("proxy login"), "{err}");
    // Asking for one's own mailbox is no proxy login.
    let stream = pair(
        LOGIN_ONLY,
        vec![
            ("A1 LOGIN ", b"A1 OK [CAPABILITY IMAP4rev1] in\r\n"),
            ("A2 CAPABILITY", b"* CAPABILITY IMAP4rev1\r\nA2 OK done\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.login("alice", "alice", &pw).await.unwrap();
}

#[tokio::test]
async fn an_earlier_commands_completion_does_not_end_a_login() {
    let refused = b"A2 NO [AUTHENTICATIONFAILED] wrong\r\n";
    let mut c = after_unanswered_id("A2 AUTHENTICATE PLAIN AHUAcA==", refused).await;
    let err = c.login("", "u", &Secret(b"p".to_vec())).await.unwrap_err();
    assert_eq!(err.code(), Some("AUTHENTICATIONFAILED"), "{err}");
    // The same for a token passed through.
    let mut c = after_unanswered_id("A2 AUTHENTICATE XOAUTH2 dG9r", refused).await;
    let token = Secret(b"dG9r".to_vec());
    let err = c.authenticate("XOAUTH2", &token).await.unwrap_err();
    assert_eq!(err.code(), Some("AUTHENTICATIONFAILED"), "{err}");
}
