//! The client streaming message bodies: literals cut short, left mid-way,
//! ending where the data ends, trickled, or interrupted by a goodbye.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use super::bodies::is_body_literal;
use super::tests::{pair, read_body, GREETING};
use super::{Client, ClientError};

/// A client whose fetch of UID 5's body has started: the server's end
/// sent `head` (the FETCH line and perhaps part of the literal) and
/// stays open.
async fn body_started(head: &[u8]) -> (Client<DuplexStream>, DuplexStream) {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    theirs.write_all(GREETING).await.unwrap();
    let mut c = Client::start(ours, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5", "BODY.PEEK[]").await.unwrap();
    theirs.write_all(head).await.unwrap();
    c.next_body(&tag).await.unwrap().unwrap();
    (c, theirs)
}

#[tokio::test]
async fn leaving_in_the_middle_of_a_body_is_no_panic() {
    // The reader stops after the first chunk of a long body, as a session
    // does when its client goes away; LOGOUT must not trip over the rest.
    let stream = pair(
        GREETING,
        vec![
            (
                "A1 UID FETCH 5 (UID BODY.PEEK[])",
                b"* 1 FETCH (UID 5 BODY[] {300}\r\n0123456789012345678901234567890123456789\
0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\
0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\
01234567890123456789012345678901234567890123456789012345678901234567890123456789)\r\nA1 OK done\r\n",
            ),
            ("A2 LOGOUT", b"* BYE\r\nA2 OK\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5", "BODY.PEEK[]").await.unwrap();
    let start = c.next_body(&tag).await.unwrap().unwrap();
    assert_eq!(start.len, 300);
    assert!(!c.body_chunk().await.unwrap().unwrap().is_empty());
    c.logout().await;
}

#[tokio::test]
async fn a_command_after_an_unfinished_body_reads_past_it() {
    let stream = pair(
        GREETING,
        vec![
            (
                "A1 UID FETCH 5:6 (UID BODY.PEEK[])",
                b"* 1 FETCH (UID 5 BODY[] {10}\r\n0123456789)\r\n\
* 2 FETCH (UID 6 BODY[] {4}\r\nabcd)\r\nA1 OK done\r\n",
            ),
            ("A2 UID STORE 5 +FLAGS.SILENT (\\Seen)", b"A2 OK stored\r\n"),
        ],
    );
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5:6", "BODY.PEEK[]").await.unwrap();
    assert_eq!(c.next_body(&tag).await.unwrap().unwrap().uid, Some(5));
    // The second body is skipped whole by next_body, then the answer ends.
    assert_eq!(c.next_body(&tag).await.unwrap().unwrap().uid, Some(6));
    assert_eq!(c.next_body(&tag).await.unwrap(), None);
    c.add_flag("5", "\\Seen").await.unwrap();
}

#[test]
fn body_literal_detection() {
    assert!(is_body_literal(b"* 1 FETCH (UID 3 BODY[] {10}"));
    assert!(is_body_literal(b"* 1 FETCH (UID 3 BODY[TEXT]<0> {10}"));
    assert!(is_body_literal(
        b"* 1 FETCH (BODY[HEADER.FIELDS (A B)] {10}"
    ));
    assert!(!is_body_literal(b"* 1 FETCH (UID 3 RFC822.HEADER {10}"));
    assert!(!is_body_literal(b"A1 OK {10}"));
    // The literal of another item after a body sent inline is not the body.
    assert!(!is_body_literal(
        b"* 1 FETCH (UID 3 BODY[] NIL X-LABELS {10}"
    ));
}

#[tokio::test]
async fn logout_in_the_middle_of_a_body_just_leaves() {
    use tokio::io::AsyncReadExt;
    let mut head = b"* 1 FETCH (UID 5 BODY[] {9000}\r\n".to_vec();
    head.resize(head.len() + 4500, b'x');
    let (mut c, mut theirs) = body_started(&head).await;
    assert!(!c.body_chunk().await.unwrap().unwrap().is_empty());
    c.logout().await;
    let mut sent = String::new();
    theirs.read_to_string(&mut sent).await.unwrap();
    assert_eq!(
        sent, "A1 UID FETCH 5 (UID BODY.PEEK[])\r\n",
        "no LOGOUT mid-body"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_whose_last_octet_is_all_the_server_sent_is_handed_on() {
    // The rest of the response may follow only later; the body is whole.
    let (mut c, theirs) = body_started(b"* 1 FETCH (UID 5 BODY[] {5}\r\nhello").await;
    let chunk = c.body_chunk().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"hello");
    drop(theirs);
}

#[tokio::test(start_paused = true)]
async fn a_body_trickled_a_byte_at_a_time_runs_into_the_timeout() {
    // Each piece must arrive within the timeout, and a piece is 4 KiB
    // (or the rest of the body): one byte every 3 s never makes one.
    let (mut c, mut theirs) = body_started(b"* 1 FETCH (UID 5 BODY[] {9000}\r\n").await;
    let trickle = tokio::spawn(async move {
        for _ in 0..9000 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if theirs.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let first = c.body_chunk().await;
    assert!(matches!(first, Err(ClientError::Timeout)), "{first:?}");
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_bye_during_a_fetch_ends_it_though_the_link_stays_open() {
    let (ours, mut theirs) = tokio::io::duplex(4096);
    theirs.write_all(GREETING).await.unwrap();
    let mut c = Client::start(ours, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5", "BODY.PEEK[]").await.unwrap();
    theirs.write_all(b"* BYE shutting down\r\n").await.unwrap();
    let e = c.next_body(&tag).await.unwrap_err();
    assert!(matches!(e, ClientError::Closed), "{e}");
    drop(theirs);
}

/// Every body a fetch of UID 5 yields when the server answers `answer`.
async fn bodies_of_fetch_5(answer: &'static [u8]) -> Vec<(Option<u32>, u64, Vec<u8>)> {
    let stream = pair(GREETING, vec![("A1 UID FETCH 5 (UID BODY.PEEK[])", answer)]);
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5", "BODY.PEEK[]").await.unwrap();
    let mut bodies = Vec::new();
    while let Some(body) = read_body(&mut c, &tag).await {
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn a_literal_that_is_no_body_is_not_taken_for_one() {
    // A FETCH with some other literal among the answers to a body fetch
    // is an ordinary response: only BODY[...] literals are streamed.
    let bodies = bodies_of_fetch_5(
        b"* 9 FETCH (X-NOTE {5}\r\nhello)\r\n\
* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\nA1 OK done\r\n",
    )
    .await;
    assert_eq!(bodies, [(Some(5), 3, b"abc".to_vec())]);
}

#[tokio::test]
async fn a_second_body_in_the_same_answer_is_passed_over() {
    let bodies = bodies_of_fetch_5(
        b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc BODY[HEADER] {2}\r\nxy)\r\nA1 OK done\r\n",
    )
    .await;
    assert_eq!(bodies, [(Some(5), 3, b"abc".to_vec())]);
}

#[tokio::test]
async fn a_second_body_is_passed_over_when_the_first_was_left_unread() {
    let answer = b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc BODY[HEADER] {2}\r\nxy)\r\nA1 OK done\r\n";
    let stream = pair(GREETING, vec![("A1 UID FETCH 5 (UID BODY.PEEK[])", answer)]);
    let mut c = Client::start(stream, Duration::from_secs(5)).await.unwrap();
    let tag = c.fetch_bodies("5", "BODY.PEEK[]").await.unwrap();
    assert_eq!(c.next_body(&tag).await.unwrap().unwrap().uid, Some(5));
    assert_eq!(c.next_body(&tag).await.unwrap(), None);
}

#[tokio::test]
async fn an_empty_body_is_handed_on_and_the_next_follows() {
    let bodies = bodies_of_fetch_5(
        b"* 1 FETCH (UID 5 BODY[] {0}\r\n)\r\n* 2 FETCH (UID 6 BODY[] {2}\r\nxy)\r\nA1 OK done\r\n",
    )
    .await;
    assert_eq!(
        bodies,
        [(Some(5), 0, Vec::new()), (Some(6), 2, b"xy".to_vec())]
    );
}
