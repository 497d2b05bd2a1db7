//! Secrets (passwords, SASL payloads, tokens), shared by both protocols.

/// A password or SASL payload. Its `Debug` never shows the bytes, so it cannot
/// leak into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: do not leave the password in freed memory.
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}
