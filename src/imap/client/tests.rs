//! The client against scripted servers.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{Client, ClientError};
use crate::imap::{Listing, Selected};
use crate::secret::Secret;
use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

/// A scripted server: for each step, the command line it expects (a
/// prefix) and what it answers.
async fn serve(
    stream: DuplexStream,
    greeting: &'static [u8],
    script: Vec<(&'static str, &'static [u8])>,
) {
    let mut s = BufReader::new(stream);
    s.write_all(greeting).await.unwrap();
    for (expect, answer) in script {
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert!(
            line.starts_with(expect),
            "expected {expect:?}, got {line:?}"
        );
        s.write_all(answer).await.unwrap();
    }
}

pub(super) fn pair(
    greeting: &'static [u8],
    script: Vec<(&'static str, &'static [u8])>,
) -> DuplexStream {
    // A small pipe so responses arrive in pieces; still large enough
    // for a command line, as kernel socket buffers are.
    let (ours, theirs) = tokio::io::duplex(64);
    tokio::spawn(serve(theirs, greeting, script));
    ours
}

/// The next body of fetch `tag`: (its UID, announced length, octets), or
/// `None` at the end of the answer.
pub(super) async fn read_body(
    c: &mut Client<DuplexStream>,
    tag: &str,
) -> Option<(Option<u32>, u64, Vec<u8>)> {
    let start = c.next_body(tag).await.unwrap()?;
    let mut body = Vec::new();
    while let Some(chunk) = c.body_chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some((start.uid, start.len, body))
}

pub(super) const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] ready\r\n";

#[tokio::test]
async fn session_tolerates_unsolicited_responses_everywhere() {
    let stream = pair(
        GREETING,
        vec![
            ("A1 AUTHENTICATE PLAIN AHUAcCB3", b"* 9 EXISTS\r\nA1 OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n"),
            // SELECT and the snapshot FETCH arrive in one write; the
            // scripted server reads the second line before answering.
            ("A2 SELECT \"INBOX\"", b""),
            (
                "A3 UID FETCH 1:* (UID RFC822.SIZE FLAGS)",
                b"* FLAGS (\\Seen)\r\n* 2 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* 1 FETCH (FLAGS (\\Seen))\r\nA2 OK [READ-WRITE] done\r\n\
* 1 FETCH (UID 5 RFC822.SIZE 10 FLAGS ())\r\n* 3 EXISTS\r\n* 2 FETCH (FLAGS (\\Deleted) UID 7 RFC822.SIZE 3)\r\nA3 OK done\r\n",
            ),
            (
                "A4 UID FETCH 5:6,8 (UID BODY.PEEK[])",
                b"* 3 EXPUNGE\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 1 FETCH (UID 5 BODY[] {12}\r\n01)\r\n{3}\r\n89 FLAGS ())\r\n\
* 4 FETCH (UID 8 BODY[] {2}\r\nhi)\r\n* 4 EXISTS\r\nA4 OK done\r\n",
            ),
            ("A5 UID FETCH 9 (UID BODY.PEEK[])", b"A5 OK nothing\r\n"),
            ("A6 UID STORE 5 +FLAGS.SILENT (\\Deleted)", b"A6 NO [SERVERBUG] nope\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.login("", "u", &Secret(b"p w".to_vec())).await.unwrap();
    assert!(
        c.has_capability("UIDPLUS"),
        "capabilities from the login completion"
    );
    let (sel, list) = c.open_mailbox("INBOX", None).await.unwrap();
    assert_eq!(
        sel,
        Selected {
            uid_validity: 42,
            exists: 2
        }
    );
    assert_eq!(
        list,
        vec![
            Listing {
                uid: 5,
                size: 10,
                deleted: false
            },
            Listing {
                uid: 7,
                size: 3,
                deleted: true
            }
        ]
    );

    // One fetch for three messages, the middle one expunged meanwhile.
    let tag = c.fetch_bodies("5:6,8", "BODY.PEEK[]").await.unwrap();
    assert_eq!(
        read_body(&mut c, &tag).await,
        Some((Some(5), 12, b"01)\r\n{3}\r\n89".to_vec()))
    );
    // 6 was expunged meanwhile: no body for it.
    assert_eq!(
        read_body(&mut c, &tag).await,
        Some((Some(8), 2, b"hi".to_vec()))
    );
    assert_eq!(read_body(&mut c, &tag).await, None);

    let tag = c.fetch_bodies("9", "BODY.PEEK[]").await.unwrap();
    assert_eq!(read_body(&mut c, &tag).await, None);

    let e = c.add_flag("5", "\\Deleted").await.unwrap_err();
    assert!(e.is_refusal() && e.code() == Some("SERVERBUG"), "{e}");
}

const SELECTED_3: &[u8] =
    b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\nA1 OK [READ-WRITE] selected\r\n";

#[tokio::test]
async fn a_refused_snapshot_of_a_mailbox_with_mail_is_an_error() {
    // Taking it for an empty maildrop would show the user no mail at all.
    let stream = pair(
        GREETING,
        vec![
            ("A1 SELECT", SELECTED_3),
            ("A2 UID FETCH", b"A2 NO [SERVERBUG] try later\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let e = c.open_mailbox("INBOX", None).await.unwrap_err();
    assert!(e.is_refusal() && e.code() == Some("SERVERBUG"), "{e}");

    // Refusing "1:*" on an empty mailbox is what some servers do.
    let stream = pair(
        GREETING,
        vec![
            (
                "A1 SELECT",
                b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\nA1 OK done\r\n",
            ),
            ("A2 UID FETCH", b"A2 NO no messages\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let (sel, listing) = c.open_mailbox("INBOX", None).await.unwrap();
    assert_eq!((sel.exists, listing.len()), (0, 0));
}

#[tokio::test]
async fn a_response_announcing_more_than_the_bound_is_refused_at_once() {
    // Not a body: it would be held in memory whole. The literal never
    // arrives; the client must not wait for it.
    let stream = pair(
        GREETING,
        vec![("A1 CAPABILITY", b"* CAPABILITY {2000000}\r\n")],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let e = c.refresh_capabilities().await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Protocol(m) if m.contains("too large")),
        "{e}"
    );
}

#[tokio::test]
async fn logout_says_goodbye_outside_a_body() {
    use tokio::io::AsyncReadExt;
    let (ours, mut theirs) = tokio::io::duplex(4096);
    theirs.write_all(GREETING).await.unwrap();
    let c = Client::start(ours, Duration::from_secs(5)).await.unwrap();
    theirs
        .write_all(b"* BYE bye\r\nA1 OK done\r\n")
        .await
        .unwrap();
    c.logout().await;
    let mut sent = String::new();
    theirs.read_to_string(&mut sent).await.unwrap();
    assert_eq!(sent, "A1 LOGOUT\r\n");
}

#[tokio::test]
async fn a_long_capability_line_is_read_whole() {
    // Servers with many extensions send lines of several KiB.
    let mut caps = String::from("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN");
    for i in 0..400 {
        caps.push_str(&format!(" X-EXTENSION-{i}"));
    }
    caps.push_str(" X-LAST] ready\r\n");
    assert!(caps.len() > 5000);
    let stream = pair(caps.into_bytes().leak(), vec![]);
    let c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    assert!(c.has_capability("X-LAST"));
}

#[tokio::test]
async fn a_response_with_a_literal_below_the_bound_is_read_whole() {
    // Not a body, so held in memory: well below the 1 MiB bound.
    let mut answer = b"* X-NOTE {100000}\r\n".to_vec();
    answer.resize(answer.len() + 100_000, b'n');
    answer.extend_from_slice(b"\r\n* CAPABILITY IMAP4rev1 X-LAST\r\nA1 OK done\r\n");
    let stream = pair(GREETING, vec![("A1 CAPABILITY", answer.leak())]);
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.refresh_capabilities().await.unwrap();
    assert!(c.has_capability("X-LAST"));
}

#[tokio::test]
async fn only_uidvalidity_sets_the_uidvalidity() {
    let stream = pair(
        GREETING,
        vec![
            ("A1 SELECT", b""),
            (
                "A2 UID FETCH",
                b"* 0 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT 9] next\r\nA1 OK done\r\nA2 OK none\r\n",
            ),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let (sel, _) = c.open_mailbox("INBOX", None).await.unwrap();
    assert_eq!(sel.uid_validity, 42);
}

/// A client whose ID the server has not answered yet: its OK comes first
/// in the server's `answer` to the next command, `command`.
pub(super) async fn after_unanswered_id(
    command: &'static str,
    answer: &[u8],
) -> Client<DuplexStream> {
    let answer = [&b"A1 OK done\r\n"[..], answer].concat().leak();
    let stream = pair(
        GREETING,
        vec![
            ("A1 ID (\"x-originating-ip\" \"192.0.2.1\")", b""),
            (command, answer),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    c.id(&[("x-originating-ip", "192.0.2.1".into())])
        .await
        .unwrap();
    c
}

#[tokio::test]
async fn an_earlier_commands_completion_does_not_end_a_search() {
    let mut c = after_unanswered_id(
        "A2 UID SEARCH UID 3:4 BEFORE 2-Dec-2026",
        b"* SEARCH 3 4\r\nA2 OK done\r\n",
    )
    .await;
    assert_eq!(c.search_before("3:4", "2-Dec-2026").await.unwrap(), [3, 4]);
}

#[tokio::test]
async fn messages_carrying_the_hiding_keyword_are_listed_as_deleted() {
    let stream = pair(
        GREETING,
        vec![
            ("A1 SELECT", b""),
            (
                "A2 UID FETCH",
                b"* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\nA1 OK done\r\n\
* 1 FETCH (UID 5 RFC822.SIZE 10 FLAGS (\\Seen $pop3deleted))\r\n\
* 2 FETCH (UID 6 RFC822.SIZE 10 FLAGS (\\Seen $POP3Deleted-not))\r\nA2 OK done\r\n",
            ),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let (_, listing) = c.open_mailbox("INBOX", Some("$POP3Deleted")).await.unwrap();
    let deleted: Vec<bool> = listing.iter().map(|l| l.deleted).collect();
    assert_eq!(deleted, [true, false]);
}

#[tokio::test]
async fn a_mailbox_named_by_a_literal_is_listed_after_its_select() {
    // The name must go as a literal, so the snapshot cannot ride along.
    let stream = pair(
        GREETING,
        vec![
            ("A1 SELECT {9}", b"+ go\r\n"),
            (
                "Entwürfe",
                b"* 2 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\nA1 OK selected\r\n",
            ),
            (
                "A2 UID FETCH 1:* (UID RFC822.SIZE FLAGS)",
                b"* 1 FETCH (UID 5 RFC822.SIZE 10 FLAGS ())\r\n\
* 2 FETCH (UID 6 RFC822.SIZE 20 FLAGS ())\r\nA2 OK done\r\n",
            ),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let (sel, listing) = c.open_mailbox("Entwürfe", None).await.unwrap();
    assert_eq!(sel.exists, 2);
    let uids: Vec<u32> = listing.iter().map(|l| l.uid).collect();
    assert_eq!(uids, [5, 6]);
}
