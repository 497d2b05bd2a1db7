//! Encoding command arguments as IMAP strings (RFC 9051 section 4.3).

/// How an argument goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum ImapString {
    /// Fits in a quoted string; escapes already applied, quotes included.
    Quoted(Vec<u8>),
    /// Needs a literal: 8-bit bytes, CR, LF or NUL.
    Literal(Vec<u8>),
}

pub fn encode(value: &[u8]) -> ImapString {
    if value
        .iter()
        .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80)
    {
        return ImapString::Literal(value.to_vec());
    }
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    ImapString::Quoted(out)
}

#[cfg(test)]
mod tests {
    use super::{encode, ImapString};

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(encode(b"a b"), ImapString::Quoted(b"\"a b\"".to_vec()));
        assert_eq!(
            encode(br#"q"\{}"#),
            ImapString::Quoted(br#""q\"\\{}""#.to_vec())
        );
        assert_eq!(encode(b""), ImapString::Quoted(b"\"\"".to_vec()));
    }

    #[test]
    fn eight_bit_and_controls_need_literals() {
        assert!(matches!(
            encode("pässword".as_bytes()),
            ImapString::Literal(_)
        ));
        assert!(matches!(encode(b"a\r\nb"), ImapString::Literal(_)));
        assert!(matches!(encode(b"a\0b"), ImapString::Literal(_)));
    }
}
