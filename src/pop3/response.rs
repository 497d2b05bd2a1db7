//! Status lines with RFC 2449 / RFC 3206 response codes.

use bytes::{BufMut, BytesMut};

/// Extended response codes (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// Credentials were refused.
    Auth,
    /// A temporary problem: try again later (the upstream is unreachable).
    SysTemp,
    /// A permanent problem that the user cannot fix by retrying.
    SysPerm,
    /// The maildrop is locked by another session.
    InUse,
    /// The user logged in too recently (RFC 2449 LOGIN-DELAY).
    LoginDelay,
}

impl RespCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
        }
    }
}

pub fn ok(out: &mut BytesMut, text: &str) {
    out.put_slice(b"+OK");
    if !text.is_empty() {
        out.put_u8(b' ');
        out.put_slice(text.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// A negative answer: an optional response code and a sentence for the
/// user. Built from what went wrong by `gateway::answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: Option<RespCode>,
    pub text: std::borrow::Cow<'static, str>,
}

impl Answer {
    /// Appends the status line.
    pub fn write(&self, out: &mut BytesMut) {
        err(out, self.code, &self.text);
    }
}

fn err(out: &mut BytesMut, code: Option<RespCode>, text: &str) {
    out.put_slice(b"-ERR ");
    if let Some(code) = code {
        out.put_u8(b'[');
        out.put_slice(code.as_str().as_bytes());
        out.put_slice(b"] ");
    }
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

/// A SASL challenge line (RFC 5034): "+ " and base64 text.
pub fn continuation(out: &mut BytesMut, base64: &str) {
    out.put_slice(b"+ ");
    out.put_slice(base64.as_bytes());
    out.put_slice(b"\r\n");
}

/// The terminating line of a multi-line answer.
pub fn end_multiline(out: &mut BytesMut) {
    out.put_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_codes() {
        let mut out = BytesMut::new();
        err(&mut out, Some(RespCode::SysTemp), "Try later");
        ok(&mut out, "");
        assert_eq!(&out[..], b"-ERR [SYS/TEMP] Try later\r\n+OK\r\n");
    }
}
