//! A refresh token at rest: encrypted with XChaCha20-Poly1305 under a key
//! derived from the user's POP3 password with Argon2id, so that a copy of
//! the store opens no mailbox, and a wrong password fails to open it like
//! any wrong password. The route and user are authenticated with it: a
//! record moved to another user does not open.
//!
//! Layout: version (1) | salt (16) | nonce (24) | ciphertext and tag.
//! Version 1 means Argon2id with m = 19 MiB, t = 2, p = 1 (OWASP's
//! minimum), a 32-byte key.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::secret::Secret;

const VERSION: u8 = 1;
const SALT: usize = 16;
const NONCE: usize = 24;
const HEADER: usize = 1 + SALT + NONCE;

/// The key of one user's record, kept while the user's sessions refresh
/// tokens so that a rotated refresh token is sealed again without asking
/// Argon2 each time.
pub(crate) struct SealKey {
    salt: [u8; SALT],
    key: Zeroizing<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    /// Wrong password, or a record damaged or made for someone else: the
    /// same to the caller.
    #[error("the record does not open with this password")]
    WontOpen,
    #[error("no random numbers")]
    Random,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn aad(route: &str, user: &str) -> Vec<u8> {
    format!("popgate oauth2 v1\0{route}\0{user}").into_bytes()
}

impl SealKey {
    /// A new key with a new salt (at enrolment). Slow: Argon2.
    pub(crate) fn create(password: &Secret) -> Result<SealKey, SealError> {
        let mut salt = [0u8; SALT];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| SealError::Random)?;
        SealKey::derive(password, salt)
    }

    fn derive(password: &Secret, salt: [u8; SALT]) -> Result<SealKey, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        argon2()
            .hash_password_into(password.expose(), &salt, key.as_mut())
            .map_err(|_| SealError::WontOpen)?;
        Ok(SealKey { salt, key })
    }

    /// The key of an existing record, from the password. Slow: Argon2.
    pub(crate) fn for_record(password: &Secret, record: &[u8]) -> Result<SealKey, SealError> {
        if record.len() < HEADER || record[0] != VERSION {
            return Err(SealError::WontOpen);
        }
        let mut salt = [0u8; SALT];
        salt.copy_from_slice(&record[1..1 + SALT]);
        SealKey::derive(password, salt)
    }

    pub(crate) fn seal(
        &self,
        route: &str,
        user: &str,
        token: &Secret,
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let aad = aad(route, user);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: token.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The refresh token in `record`; fails alike for a wrong password, a
    /// record of another salt (re-enrolled meanwhile) or damage.
    pub(crate) fn open(&self, route: &str, user: &str, record: &[u8]) -> Result<Secret, SealError> {
        if record.len() < HEADER || record[0] != VERSION || record[1..1 + SALT] != self.salt {
            return Err(SealError::WontOpen);
        }
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let aad = aad(route, user);
        cipher
            .decrypt(
                XNonce::from_slice(&record[1 + SALT..HEADER]),
                Payload {
                    msg: &record[HEADER..],
                    aad: &aad,
                },
            )
            .map(Secret)
            .map_err(|_| SealError::WontOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_the_password_route_and_user() {
        let pw = Secret(b"pop3 password".to_vec());
        let key = SealKey::create(&pw).unwrap();
        let token = Secret(b"refresh-token-value".to_vec());
        let record = key.seal("default", "ann", &token).unwrap();
        assert!(!record.windows(token.0.len()).any(|w| w == token.expose()));
        let again = SealKey::for_record(&pw, &record).unwrap();
        assert_eq!(again.open("default", "ann", &record).unwrap(), token);
        let wrong = SealKey::for_record(&Secret(b"pop3 passwore".to_vec()), &record).unwrap();
        assert!(wrong.open("default", "ann", &record).is_err());
        assert!(again.open("default", "bob", &record).is_err());
        assert!(again.open("east", "ann", &record).is_err());
        let mut damaged = record.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(again.open("default", "ann", &damaged).is_err());
    }
}
