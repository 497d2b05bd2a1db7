//! Password hashes in the credentials file: Argon2 (PHC strings,
//! `$argon2id$v=19$m=...,t=...,p=...$salt$hash`), bcrypt (`$2a$`, `$2b$`,
//! `$2y$`) and SHA-512-crypt (`$6$[rounds=N$]salt$hash`, what `mkpasswd -m
//! sha-512` and `openssl passwd -6` write). Errors name the kind of
//! problem, never the hash.

use crate::secret::Secret;

pub(crate) enum Hashed {
    Argon2(String),
    Bcrypt(String),
    Sha512Crypt {
        rounds: Option<usize>,
        salt: String,
        hash: String,
    },
}

impl Hashed {
    /// `None`: not a hash (a plaintext secret); `Some(Err)`: a hash that
    /// cannot be used.
    pub(crate) fn parse(s: &str) -> Option<Result<Hashed, String>> {
        if s.starts_with("$argon2") {
            return Some(
                argon2::PasswordHash::new(s)
                    .map(|_| Hashed::Argon2(s.to_string()))
                    .map_err(|_| "an unreadable Argon2 hash".to_string()),
            );
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            return Some(if s.len() == 60 {
                Ok(Hashed::Bcrypt(s.to_string()))
            } else {
                Err("a bcrypt hash must be 60 characters".into())
            });
        }
        let rest = s.strip_prefix("$6$")?;
        let bad = || Err("an unreadable SHA-512-crypt hash".to_string());
        let (rounds, rest) = match rest.strip_prefix("rounds=") {
            Some(r) => match r.split_once('$') {
                Some((n, rest)) => match n.parse::<usize>() {
                    Ok(n) => (Some(n.clamp(1000, 999_999_999)), rest),
                    Err(_) => return Some(bad()),
                },
                None => return Some(bad()),
            },
            None => (None, rest),
        };
        let Some((salt, hash)) = rest.split_once('$') else {
            return Some(bad());
        };
        if hash.len() != 86 || salt.len() > 16 {
            return Some(bad());
        }
        Some(Ok(Hashed::Sha512Crypt {
            rounds,
            salt: salt.to_string(),
            hash: hash.to_string(),
        }))
    }
}

pub(crate) fn verify(h: &Hashed, password: &Secret) -> bool {
    match h {
        Hashed::Argon2(s) => {
            use argon2::PasswordVerifier;
            argon2::PasswordHash::new(s).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.expose(), &parsed)
                    .is_ok()
            })
        }
        Hashed::Bcrypt(s) => bcrypt::verify(password.expose(), s).unwrap_or(false),
        Hashed::Sha512Crypt { rounds, salt, hash } => {
            let params = match rounds {
                Some(n) => sha_crypt::Sha512Params::new(*n),
                None => Ok(sha_crypt::Sha512Params::default()),
            };
            let Ok(params) = params else { return false };
            let Ok(made) = sha_crypt::sha512_crypt_b64(password.expose(), salt.as_bytes(), &params)
            else {
                return false;
            };
            subtle::ConstantTimeEq::ct_eq(made.as_bytes(), hash.as_bytes()).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{verify, Hashed};
    use crate::secret::Secret;

    fn check(hash: &str, right: &str) {
        let h = Hashed::parse(hash).expect("a hash").expect("usable");
        assert!(verify(&h, &Secret(right.as_bytes().to_vec())), "{hash}");
        assert!(!verify(&h, &Secret(b"wrong".to_vec())), "{hash}");
    }

    #[test]
    fn the_three_kinds_verify() {
        // openssl passwd -6 -salt saltsalt secret
        check(
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "secret",
        );
        check(
            "$6$rounds=5000$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "secret",
        );
        // glibc crypt("secret", "$2b$04$abcdefghijklmnopqrstuv")
        check(
            "$2b$04$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW",
            "secret",
        );
        let argon = {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
            argon2::Argon2::default()
                .hash_password(b"secret", &salt)
                .unwrap()
                .to_string()
        };
        assert!(argon.starts_with("$argon2id$"));
        check(&argon, "secret");
        assert!(Hashed::parse("plain secret").is_none());
        assert!(Hashed::parse("$6$salt").unwrap().is_err());
        assert!(Hashed::parse("$2b$short").unwrap().is_err());
    }

    #[test]
    fn sha512_crypt_salts_hold_at_most_sixteen_characters() {
        let hash = "x".repeat(86);
        for (salt, usable) in [(8, true), (16, true), (17, false)] {
            let entry = format!("$6${}${hash}", "s".repeat(salt));
            let parsed = Hashed::parse(&entry).expect("a hash");
            assert_eq!(parsed.is_ok(), usable, "salt of {salt}");
        }
        let short = format!("$6$salt${}", "x".repeat(85));
        assert!(Hashed::parse(&short).unwrap().is_err());
    }
}
