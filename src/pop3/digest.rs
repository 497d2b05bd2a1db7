//! The shared-secret mechanisms: APOP (RFC 1939 section 7) and CRAM-MD5
//! (RFC 2195). MD5 is weak, but these are what old clients speak; popgate
//! only offers them when an admin configures a credentials file.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// APOP: MD5 of the greeting's timestamp followed by the secret.
pub fn apop(timestamp: &str, secret: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret);
    hex(&h.finalize())
}

/// CRAM-MD5: HMAC-MD5 of the challenge keyed with the secret.
pub fn cram_md5(challenge: &str, secret: &[u8]) -> String {
    let mut mac = Hmac::<Md5>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Compares hex digests in constant time (subtle), ignoring case. Only the
/// lengths, which are public, may end the comparison early.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    // The expected digest stands in for the secret: its copies are wiped.
    let lower = |s: &str| -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(s.bytes().map(|b| b.to_ascii_lowercase()).collect())
    };
    a.len() == b.len() && bool::from(lower(a).as_slice().ct_eq(lower(b).as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1939_apop_example() {
        assert_eq!(
            apop("<1896.697170952@dbc.mtview.ca.us>", b"tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn rfc2195_cram_md5_example() {
        assert_eq!(
            cram_md5(
                "<1896.697170952@postoffice.reston.mci.net>",
                b"tanstaaftanstaaf"
            ),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    #[test]
    fn comparison() {
        assert!(same("ABCdef", "abcDEF"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
