//! Quoting meets parsing: any value popgate encodes as an IMAP string reads
//! back as the same bytes through the response parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popgate::imap::parse::{response, Response, Untagged};
use popgate::imap::quote::{encode, ImapString};

fn unescape(quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(quoted.len());
    let mut escaped = false;
    for &b in quoted {
        if !escaped && b == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

fuzz_target!(|value: &[u8]| {
    let (wire, quoted) = match encode(value) {
        ImapString::Quoted(q) => {
            assert!(q.len() >= 2 && q.starts_with(b"\"") && q.ends_with(b"\""));
            assert!(!value
                .iter()
                .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80));
            (q, true)
        }
        ImapString::Literal(v) => {
            assert_eq!(v, value);
            assert!(v
                .iter()
                .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80));
            let mut w = format!("{{{}}}\r\n", v.len()).into_bytes();
            w.extend_from_slice(&v);
            (w, false)
        }
    };
    let mut line = b"* 1 FETCH (UID 7 BODY[] ".to_vec();
    line.extend_from_slice(&wire);
    line.extend_from_slice(b" FLAGS (\\Seen))");
    let Ok(Response::Untagged(Untagged::Fetch(f))) = response(&line) else {
        panic!("not parsed: {:?}", String::from_utf8_lossy(&line));
    };
    assert_eq!(f.uid, Some(7));
    let body = f.body.expect("a body");
    let got = if quoted {
        unescape(body)
    } else {
        body.to_vec()
    };
    assert_eq!(got, value);
});
