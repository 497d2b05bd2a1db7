//! The hash that recognises a message on both servers: its header fields
//! less those that servers add or rewrite when mail moves or is read.
//!
//! Left out, as Dovecot's pop3-migration does: Content-Length, Return-Path,
//! Status, X-IMAP, X-IMAPbase, X-Keywords, X-Message-Flag, X-Status, X-UID,
//! X-UIDL, X-Yahoo-Newman-Property, fields whose names hold bytes outside
//! 0x21..0x7E, and everything after a line of only CRs. Left out as well:
//! Lines, and the trace fields an import or a second delivery adds
//! (Received, Delivered-To, X-Original-To). Whitespace is ignored and other
//! bytes outside 0x21..0x7E count as `?`, so refolding, CRLF against LF
//! and 8-bit rewriting do not change the hash.

const LEFT_OUT: &[&str] = &[
    "content-length",
    "delivered-to",
    "lines",
    "received",
    "return-path",
    "status",
    "x-imap",
    "x-imapbase",
    "x-keywords",
    "x-message-flag",
    "x-original-to",
    "x-status",
    "x-uid",
    "x-uidl",
    "x-yahoo-newman-property",
];

/// Header bytes beyond this are not hashed: a header this long is rare,
/// and its first part tells messages apart as well.
pub const MAX_HEADER: usize = 256 * 1024;

/// The hash of a message's header (the bytes up to and including the empty
/// line, or all of them when there is none; anything after the empty line
/// is ignored).
pub fn hash(header: &[u8]) -> u128 {
    let header = &header[..header.len().min(MAX_HEADER)];
    let mut canonical = Vec::with_capacity(header.len());
    let mut keep = false;
    for raw in header.split(|&b| b == b'\n') {
        let line = trim_crs(raw);
        if line.is_empty() {
            // The empty line, or a line of only CRs: the end either way
            // (servers disagree on whether CR CR LF ends the header).
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if keep {
                normalise(line, &mut canonical);
            }
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        keep = !name.is_empty()
            && name.iter().all(|b| (0x21..=0x7e).contains(b))
            && !LEFT_OUT
                .iter()
                .any(|l| l.as_bytes().eq_ignore_ascii_case(name));
        if keep {
            canonical.push(b'\n');
            canonical.extend(name.iter().map(u8::to_ascii_lowercase));
            canonical.push(b':');
            normalise(value, &mut canonical);
        }
    }
    let d = ring::digest::digest(&ring::digest::SHA256, &canonical);
    let mut first = [0u8; 16];
    first.copy_from_slice(&d.as_ref()[..16]);
    u128::from_le_bytes(first)
}

fn trim_crs(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    &line[..end]
}

fn normalise(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b' ' | b'\t' | b'\r' => {}
            0x21..=0x7e => out.push(b),
            _ => out.push(b'?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hash;

    const BASE: &[u8] = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: hello there\r\n\
Message-ID: <1@x.test>\r\nDate: Wed, 2 Dec 2026 05:00:00 +0000\r\n\r\n";

    #[test]
    fn rewritten_fields_do_not_count() {
        let h = hash(BASE);
        let added = [
            "Return-Path: <a@x.test>\r\n",
            "Received: from import by new.test; Wed, 2 Dec 2026\r\n",
            "Status: RO\r\n",
            "X-Status: A\r\n",
            "X-UID: 17\r\n",
            "X-UIDL: 0000001\r\n",
            "X-Keywords: $Junk\r\n",
            "X-IMAPbase: 1 2\r\n",
            "Content-Length: 12\r\n",
            "Lines: 3\r\n",
            "Delivered-To: b@x.test\r\n",
            "Bad Name: x\r\n",
        ];
        for a in added {
            let mut m = a.as_bytes().to_vec();
            m.extend_from_slice(BASE);
            assert_eq!(hash(&m), h, "{a}");
        }
    }

    #[test]
    fn folding_line_ends_and_8bit_do_not_count() {
        let lf: Vec<u8> = BASE.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(hash(&lf), hash(BASE));
        let folded = String::from_utf8_lossy(BASE).replace("hello there", "hello\r\n  there");
        assert_eq!(hash(folded.as_bytes()), hash(BASE));
        let a = String::from_utf8_lossy(BASE).replace("hello", "h\u{e9}llo");
        let b = String::from_utf8_lossy(BASE).replace("hello", "h?llo");
        assert_ne!(hash(a.as_bytes()), hash(BASE));
        // é is two bytes in UTF-8: each counts as '?'.
        let b2 = b.replace("h?llo", "h??llo");
        assert_eq!(hash(a.as_bytes()), hash(b2.as_bytes()));
    }

    #[test]
    fn content_and_body() {
        let other = String::from_utf8_lossy(BASE).replace("<1@", "<2@");
        assert_ne!(hash(other.as_bytes()), hash(BASE));
        let mut with_body = BASE.to_vec();
        with_body.extend_from_slice(b"the body\r\n");
        assert_eq!(hash(&with_body), hash(BASE));
        // A line of only CRs ends the header, as some servers treat it.
        let mut cr = BASE[..BASE.len() - 2].to_vec();
        cr.extend_from_slice(b"\r\r\nX-After: 1\r\n\r\n");
        assert_eq!(hash(&cr), hash(BASE));
        // Field order counts.
        let swapped = String::from_utf8_lossy(BASE).replacen(
            "From: a@x.test\r\nTo: b@x.test",
            "To: b@x.test\r\nFrom: a@x.test",
            1,
        );
        assert_ne!(hash(swapped.as_bytes()), hash(BASE));
    }
}
