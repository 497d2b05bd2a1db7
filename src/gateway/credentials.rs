//! The credentials file behind APOP and CRAM-MD5: one `user:secret` per
//! line, `#` comments. It is re-read on a timer; a file that fails to load
//! keeps the previous contents in service. The file's raw bytes are wiped
//! once parsed; only a keyed digest of them is kept, to notice a change.

use arc_swap::ArcSwap;
use ring::hmac;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::files::{read_secret, Reload};
use crate::pop3::Secret;

pub struct Credentials {
    path: PathBuf,
    secrets: ArcSwap<HashMap<String, Secret>>,
    /// HMAC of the file as last read, under a key made at start: tells a
    /// change without keeping the content or a digest one could crack.
    seen: Mutex<hmac::Tag>,
    key: hmac::Key,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Arc<Credentials>, String> {
        let raw = read_secret(path).map_err(|e| e.to_string())?;
        let secrets = parse(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "no random numbers for the credentials digest".to_string())?;
        Ok(Arc::new(Credentials {
            path: path.to_owned(),
            secrets: ArcSwap::from_pointee(secrets),
            seen: Mutex::new(hmac::sign(&key, &raw)),
            key,
        }))
    }

    /// The secret of `user`, if the file names them.
    pub fn secret(&self, user: &str) -> Option<Secret> {
        self.secrets.load().get(user).cloned()
    }
}

impl Reload for Credentials {
    fn reload(&self) -> Option<Result<String, String>> {
        let raw = match read_secret(&self.path) {
            Ok(raw) => raw,
            Err(e) => return Some(Err(e.to_string())),
        };
        let tag = hmac::sign(&self.key, &raw);
        let mut last = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == tag.as_ref() {
            return None;
        }
        // The replaced map's secrets are wiped as its last reader drops it.
        let result = parse(&raw).map(|secrets| {
            let n = secrets.len();
            self.secrets.store(Arc::new(secrets));
            format!("{n} users")
        });
        *last = tag;
        Some(result.map_err(|e| format!("{}: {e}", self.path.display())))
    }
}

fn parse(raw: &[u8]) -> Result<HashMap<String, Secret>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // Errors name the line only: the content may be a secret.
        let (user, secret) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected user:secret", i + 1))?;
        if user.is_empty() || secret.is_empty() {
            return Err(format!("line {}: empty user or secret", i + 1));
        }
        if out
            .insert(user.to_string(), Secret(secret.as_bytes().to_vec()))
            .is_some()
        {
            return Err(format!("line {}: user listed twice", i + 1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines_without_secrets() {
        let c = parse(b"# users\nann:s3:cret\n\nbob:pw\r\n").unwrap();
        assert_eq!(c["ann"].expose(), b"s3:cret");
        assert_eq!(c["bob"].expose(), b"pw");
        let e = parse(b"ann:x\nhunter2\n").unwrap_err();
        assert_eq!(e, "line 2: expected user:secret");
        assert!(parse(b"ann:x\nann:y\n").is_err());
    }
}
