use super::*;
use proptest::prelude::*;

fn untagged(s: &[u8]) -> Untagged<'_> {
    match response(s).unwrap() {
        Response::Untagged(u) => u,
        other => panic!("{other:?}"),
    }
}

#[test]
fn numbers_are_one_to_nineteen_digits() {
    assert_eq!(number(b"007"), Some(7));
    assert_eq!(
        number(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    for bad in [&b""[..], b"10000000000000000000", b"1a", b"-1"] {
        assert_eq!(number(bad), None, "{bad:?}");
    }
}

#[test]
fn a_code_without_text_leaves_the_text_empty() {
    match response(b"A1 OK [READ-WRITE]").unwrap() {
        Response::Tagged { text, .. } => {
            assert_eq!(text.code, Some(&b"READ-WRITE"[..]));
            assert_eq!(text.text, b"");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshot_fetch_lines_in_any_order() {
    let f = untagged(b"* 12 FETCH (UID 34 RFC822.SIZE 5678 FLAGS (\\Seen \\Deleted))");
    assert_eq!(
        f,
        Untagged::Fetch(Fetch {
            seq: 12,
            uid: Some(34),
            size: Some(5678),
            deleted: true,
            flags: b"\\Seen \\Deleted",
            body: None
        })
    );
    let f = untagged(b"* 1 FETCH (FLAGS () RFC822.SIZE 9 UID 4 MODSEQ (77))");
    assert!(matches!(
        f,
        Untagged::Fetch(Fetch {
            uid: Some(4),
            size: Some(9),
            deleted: false,
            ..
        })
    ));
    // Items not asked for are passed over whole, quoted strings too.
    let f = untagged(b"* 2 FETCH (X-NOTE \"a ) b\" UID 5 RFC822.SIZE 10)");
    assert!(matches!(
        f,
        Untagged::Fetch(Fetch {
            uid: Some(5),
            size: Some(10),
            ..
        })
    ));
}

#[test]
fn body_values() {
    let f = untagged(b"* 3 FETCH (UID 9 BODY[] {5}\r\nab)\"c FLAGS (\\Seen))");
    assert!(matches!(
        f,
        Untagged::Fetch(Fetch {
            uid: Some(9),
            body: Some(b"ab)\"c"),
            ..
        })
    ));
    let f = untagged(b"* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] \"x\\\"y\" UID 2)");
    assert!(matches!(
        f,
        Untagged::Fetch(Fetch {
            uid: Some(2),
            body: Some(b"x\\\"y"),
            ..
        })
    ));
    let f = untagged(b"* 3 FETCH (BODY[] NIL UID 2)");
    assert!(matches!(
        f,
        Untagged::Fetch(Fetch {
            uid: Some(2),
            body: None,
            ..
        })
    ));
}

#[test]
fn status_responses() {
    let r = response(b"A7 NO [UNAVAILABLE] Temporary failure").unwrap();
    let Response::Tagged { tag, status, text } = r else {
        panic!()
    };
    assert_eq!((tag, status), (&b"A7"[..], Status::No));
    assert!(text.code_is("unavailable"));
    assert_eq!(text.text, b"Temporary failure");
    assert_eq!(text.text_lossy(), "Temporary failure");
    let long = [&b"A7 NO "[..], &[b'x'; 300]].concat();
    let Response::Tagged { text, .. } = response(&long).unwrap() else {
        panic!()
    };
    assert_eq!(text.text_lossy(), "x".repeat(200), "kept short for the log");
    assert!(matches!(
        response(b"A8 BAD [CLIENTBUG] what").unwrap(),
        Response::Tagged {
            status: Status::Bad,
            ..
        }
    ));

    let Untagged::Status(Status::Ok, text) =
        untagged(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.")
    else {
        panic!()
    };
    assert_eq!(
        text.capabilities().unwrap(),
        vec!["IMAP4REV1", "SASL-IR", "AUTH=PLAIN"]
    );
    assert!(
        matches!(untagged(b"* OK [UIDVALIDITY 1700000000] UIDs valid"),
        Untagged::Status(Status::Ok, t) if t.code_is("UIDVALIDITY") && t.code_args == Some(b"1700000000"))
    );
    assert_eq!(untagged(b"* 4 EXISTS"), Untagged::Exists(4));
    assert_eq!(untagged(b"* 2 EXPUNGE"), Untagged::Expunge(2));
    assert_eq!(untagged(b"* FLAGS (\\Seen)"), Untagged::Other);
    assert_eq!(untagged(b"* 3 RECENT"), Untagged::Other);
    assert!(matches!(
        untagged(b"* BYE shutting down"),
        Untagged::Status(Status::Bye, _)
    ));
    assert_eq!(response(b"+ go ahead").unwrap(), Response::Continuation);
}

#[test]
fn malformed_input_is_an_error() {
    for bad in [
        &b""[..],
        b"*",
        b"A1",
        b"A1 MAYBE",
        b"* 1 FETCH (UID x)",
        b"* 1 FETCH (BODY[] {9}\r\nab)",
        b"* 99999999999 EXISTS",
    ] {
        assert!(response(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

proptest! {
    #[test]
    fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = response(&input);
    }

    #[test]
    fn fetch_fields_round_trip(seq: u32, uid: u32, size: u64, deleted: bool) {
        let size = size % 10_000_000_000;
        let flags = if deleted { "\\Seen \\Deleted" } else { "\\Seen" };
        let line = format!("* {seq} FETCH (UID {uid} RFC822.SIZE {size} FLAGS ({flags}))");
        let Untagged::Fetch(f) = untagged(line.as_bytes()) else { panic!() };
        prop_assert_eq!((f.seq, f.uid, f.size, f.deleted), (seq, Some(uid), Some(size), deleted));
    }
}
