//! The credentials file behind APOP and CRAM-MD5, and behind the POP3
//! passwords of a route whose application token opens every mailbox
//! (`oauth2.flow: client_credentials`): one `user:secret` per line, `#`
//! comments. A secret may be a hash instead (Argon2 `$argon2id$...`,
//! bcrypt `$2b$...`, SHA-512-crypt `$6$...`), so that no plaintext need be
//! kept; such a user can log in with a password only, not APOP or
//! CRAM-MD5, which need the plaintext. It is re-read on a timer; a file that fails to load
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
    secrets: ArcSwap<HashMap<String, Entry>>,
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

    /// The plaintext secret of `user`, if the file names them with one.
    pub fn secret(&self, user: &str) -> Option<Secret> {
        match self.secrets.load().get(user) {
            Some(Entry::Plain(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Whether `password` is `user`'s. Slow for a hashed entry (that is
    /// the point of the hash): call it off the async threads.
    pub fn verify(&self, user: &str, password: &Secret) -> bool {
        match self.secrets.load().get(user) {
            Some(Entry::Plain(s)) => s == password,
            Some(Entry::Hashed(h)) => super::password_hash::verify(h, password),
            None => false,
        }
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

/// A line's secret.
enum Entry {
    Plain(Secret),
    Hashed(super::password_hash::Hashed),
}

/// Shows neither the secret nor the hash.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entry::Plain(_) => "Plain(<redacted>)",
            Entry::Hashed(_) => "Hashed(<redacted>)",
        })
    }
}

fn parse(raw: &[u8]) -> Result<HashMap<String, Entry>, String> {
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
        let entry = match super::password_hash::Hashed::parse(secret) {
            Some(Ok(h)) => Entry::Hashed(h),
            Some(Err(why)) => return Err(format!("line {}: {why}", i + 1)),
            None => Entry::Plain(Secret(secret.as_bytes().to_vec())),
        };
        if out.insert(user.to_string(), entry).is_some() {
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
        let plain = |e: &Entry| match e {
            Entry::Plain(s) => s.expose().to_vec(),
            Entry::Hashed(_) => panic!("hashed"),
        };
        assert_eq!(plain(&c["ann"]), b"s3:cret");
        assert_eq!(plain(&c["bob"]), b"pw");
        let e = parse(b"ann:$6$salt\n").err().unwrap();
        assert!(e.starts_with("line 1: "), "{e}");
        for empty in [&b"ann:\n"[..], b":secret\n"] {
            assert_eq!(parse(empty).unwrap_err(), "line 1: empty user or secret");
        }
        let e = parse(b"ann:x\nhunter2\n").unwrap_err();
        assert_eq!(e, "line 2: expected user:secret");
        assert!(parse(b"ann:x\nann:y\n").is_err());
        // A debug print of the table names the users and redacts the rest.
        let shown = format!("{c:?}");
        assert!(shown.contains("\"ann\": Plain(<redacted>)"), "{shown}");
        assert!(!shown.contains("cret") && !shown.contains("pw"), "{shown}");
    }

    /// A private file in a directory removed with the guard.
    fn private_file(name: &str, text: &str) -> (PathBuf, crate::test_support::TestDir) {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::test_support::TestDir::new(&format!("creds-{name}"));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("credentials");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, dir)
    }

    #[test]
    fn a_reload_reports_only_a_change_and_keeps_the_old_users_on_a_bad_file() {
        let (path, _gone) = private_file("reload", "ann:one\n");
        let creds = Credentials::load(&path).unwrap();
        let pw = |s: &str| Secret(s.as_bytes().to_vec());
        assert!(creds.verify("ann", &pw("one")));
        assert_eq!(creds.reload(), None, "an unchanged file is not news");

        std::fs::write(&path, "ann:two\nbob:three\n").unwrap();
        assert_eq!(creds.reload(), Some(Ok("2 users".to_string())));
        assert!(creds.verify("ann", &pw("two")) && !creds.verify("ann", &pw("one")));
        assert_eq!(
            creds.secret("bob").map(|s| s.expose().to_vec()),
            Some(b"three".to_vec())
        );
        assert_eq!(creds.reload(), None);

        std::fs::write(&path, "ann:two\nhunter2\n").unwrap();
        let err = creds.reload().unwrap().unwrap_err();
        assert!(err.ends_with("line 2: expected user:secret"), "{err}");
        assert!(
            creds.verify("ann", &pw("two")),
            "a bad file keeps the last good one"
        );
        assert!(!creds.verify("carol", &pw("two")));
    }
}
