//! The old POP3 server's answers, parsed without I/O: status lines,
//! multi-line bodies, UIDL and LIST entries, CAPA, and the check that the
//! listing is usable (every message numbered once, every UIDL unique).

use std::collections::{HashMap, HashSet};

/// What is wrong with an answer. Texts quote at most a short, escaped
/// prefix of what the server sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unexpected answer {0}")]
    Garbage(String),
    #[error("the UIDL {0} is listed for two messages")]
    DuplicateUidl(String),
    #[error("message {0} is listed twice")]
    DuplicateNumber(u32),
    #[error("message {0} has a UIDL but no size in LIST")]
    NoSize(u32),
}

/// A status line's verdict: `+OK` with its text, or `-ERR` with its text.
pub type Status<'a> = Result<&'a str, &'a str>;

/// A short printable quote of server bytes, for errors and logs.
pub fn quote(line: &[u8]) -> String {
    let cut = &line[..line.len().min(60)];
    let text = String::from_utf8_lossy(cut);
    let mut q = format!("{:?}", text.trim_end_matches(['\r', '\n']));
    if line.len() > 60 {
        q.push_str("...");
    }
    q
}

fn garbage(line: &[u8]) -> WireError {
    WireError::Garbage(quote(line))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `+OK text` or `-ERR text` (RFC 1939); anything else is garbage.
pub fn status(line: &[u8]) -> Result<Status<'_>, WireError> {
    let l = trim_eol(line);
    fn text<'a>(rest: &'a [u8], line: &[u8]) -> Result<&'a str, WireError> {
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        std::str::from_utf8(rest).map_err(|_| garbage(line))
    }
    if let Some(rest) = l.strip_prefix(b"+OK") {
        if rest.is_empty() || rest[0] == b' ' {
            return Ok(Ok(text(rest, line)?));
        }
    }
    if let Some(rest) = l.strip_prefix(b"-ERR") {
        if rest.is_empty() || rest[0] == b' ' {
            return Ok(Err(text(rest, line)?));
        }
    }
    Err(garbage(line))
}

/// One line of a multi-line answer: `None` for the terminating `.`, else
/// the line without its end and without byte-stuffing.
pub fn data_line(line: &[u8]) -> Option<&[u8]> {
    let l = trim_eol(line);
    if l == b"." {
        return None;
    }
    Some(l.strip_prefix(b".").unwrap_or(l))
}

/// `n uidl`: a message number and a UIDL of 1 to 70 characters in
/// 0x21..0x7E (RFC 1939).
pub fn uidl_entry(line: &[u8]) -> Result<(u32, String), WireError> {
    let l = trim_eol(line);
    let mut parts = l.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(n), Some(uidl), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(garbage(line));
    };
    let n = number(n).ok_or_else(|| garbage(line))?;
    if uidl.len() > 70 || uidl.iter().any(|b| !(0x21..=0x7e).contains(b)) {
        return Err(garbage(line));
    }
    Ok((n, String::from_utf8_lossy(uidl).into_owned()))
}

/// `n octets` of a LIST answer.
pub fn list_entry(line: &[u8]) -> Result<(u32, u64), WireError> {
    let l = trim_eol(line);
    let mut parts = l.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(n), Some(size)) = (parts.next(), parts.next()) else {
        return Err(garbage(line));
    };
    let n = number(n).ok_or_else(|| garbage(line))?;
    let size = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| garbage(line))?;
    Ok((n, size))
}

fn number(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&n| n > 0)
}

/// Whether a CAPA answer's lines offer `capability`.
pub fn offers(capa: &[Vec<u8>], capability: &str) -> bool {
    capa.iter().any(|l| {
        l.split(|&b| b == b' ')
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(capability.as_bytes()))
    })
}

/// A message of the old server's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub number: u32,
    pub uidl: String,
    pub size: u64,
}

/// Joins UIDL and LIST by message number; a number or a UIDL listed
/// twice makes the listing unusable.
pub fn listing(uidls: &[(u32, String)], sizes: &[(u32, u64)]) -> Result<Vec<Listed>, WireError> {
    let mut by_number = HashMap::with_capacity(sizes.len());
    for &(n, size) in sizes {
        if by_number.insert(n, size).is_some() {
            return Err(WireError::DuplicateNumber(n));
        }
    }
    let mut seen_numbers = HashSet::with_capacity(uidls.len());
    let mut seen_uidls = HashSet::with_capacity(uidls.len());
    let mut out = Vec::with_capacity(uidls.len());
    for (n, uidl) in uidls {
        if !seen_numbers.insert(*n) {
            return Err(WireError::DuplicateNumber(*n));
        }
        if !seen_uidls.insert(uidl.as_str()) {
            return Err(WireError::DuplicateUidl(quote(uidl.as_bytes())));
        }
        let size = *by_number.get(n).ok_or(WireError::NoSize(*n))?;
        out.push(Listed {
            number: *n,
            uidl: uidl.clone(),
            size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"+OK Dovecot ready.\r\n"), Ok(Ok("Dovecot ready.")));
        assert_eq!(status(b"+OK\r\n"), Ok(Ok("")));
        assert_eq!(status(b"-ERR [AUTH] no\r\n"), Ok(Err("[AUTH] no")));
        assert!(status(b"+OKAY\r\n").is_err());
        assert!(status(b"* OK IMAP\r\n").is_err());
        assert!(status(b"\xff\xfe\r\n").is_err());
        assert!(status(b"+OK \xff\r\n").is_err());
    }

    #[test]
    fn multi_line_unstuffing() {
        assert_eq!(data_line(b".\r\n"), None);
        assert_eq!(data_line(b"..x\r\n"), Some(&b".x"[..]));
        assert_eq!(data_line(b"Subject: a\r\n"), Some(&b"Subject: a"[..]));
        assert_eq!(data_line(b"\r\n"), Some(&b""[..]));
    }

    #[test]
    fn uidl_and_list_entries() {
        assert_eq!(uidl_entry(b"1 abc.def\r\n"), Ok((1, "abc.def".into())));
        assert_eq!(uidl_entry(b"12  x\r\n"), Ok((12, "x".into())));
        assert!(uidl_entry(b"0 x\r\n").is_err());
        assert!(uidl_entry(b"1\r\n").is_err());
        assert!(uidl_entry(b"1 a b\r\n").is_err());
        assert!(uidl_entry(b"x y\r\n").is_err());
        assert!(uidl_entry(b"1 caf\xc3\xa9\r\n").is_err());
        assert!(uidl_entry(format!("1 {}\r\n", "a".repeat(71)).as_bytes()).is_err());
        assert_eq!(list_entry(b"3 1200\r\n"), Ok((3, 1200)));
        assert!(list_entry(b"3 -1\r\n").is_err());
        assert!(list_entry(b"3\r\n").is_err());
    }

    #[test]
    fn capabilities() {
        let capa = vec![
            b"TOP".to_vec(),
            b"pipelining".to_vec(),
            b"SASL PLAIN".to_vec(),
        ];
        assert!(offers(&capa, "PIPELINING"));
        assert!(offers(&capa, "SASL"));
        assert!(!offers(&capa, "STLS"));
    }

    #[test]
    fn listings_join_and_refuse_duplicates() {
        let u = |n, s: &str| (n, s.to_string());
        let l = listing(&[u(1, "a"), u(2, "b")], &[(2, 20), (1, 10)]).unwrap();
        assert_eq!(l[0].size, 10);
        assert_eq!(l[1].uidl, "b");
        assert_eq!(
            listing(&[u(1, "a"), u(2, "a")], &[(1, 1), (2, 2)]),
            Err(WireError::DuplicateUidl("\"a\"".into()))
        );
        assert_eq!(
            listing(&[u(1, "a"), u(1, "b")], &[(1, 1)]),
            Err(WireError::DuplicateNumber(1))
        );
        assert_eq!(listing(&[u(3, "a")], &[(1, 1)]), Err(WireError::NoSize(3)));
    }

    #[test]
    fn quotes_are_short_and_escaped() {
        let q = quote(&[b'x'; 200]);
        assert!(q.len() < 70 && q.ends_with("..."), "{q}");
        assert_eq!(quote(b"a\x01b\r\n"), "\"a\\u{1}b\"");
    }
}
