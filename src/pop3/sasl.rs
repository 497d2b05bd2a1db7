//! The server side of the SASL exchanges popgate accepts (RFC 5034 AUTH):
//! PLAIN (RFC 4616) and LOGIN. Each step takes one client line and says what
//! to answer; no I/O.

use super::Secret;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// What a finished exchange yields.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Authorization identity; empty when the client asks for none.
    pub authzid: String,
    pub user: String,
    pub password: Secret,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `+ <challenge>` and feed the next line.
    Challenge(&'static str),
    Done(Credentials),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("Unsupported authentication mechanism")]
    UnknownMechanism,
    #[error("Authentication cancelled")]
    Cancelled,
    #[error("Invalid base64 data")]
    BadBase64,
    #[error("Malformed authentication data")]
    Malformed,
}

pub const MECHANISMS: &[&str] = &["PLAIN", "LOGIN"];

#[derive(Debug)]
pub enum Exchange {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

impl Exchange {
    /// Starts an exchange; `initial` is the optional initial response ("=" is
    /// an empty one).
    pub fn start(mechanism: &str, initial: Option<&str>) -> Result<(Exchange, Step), SaslError> {
        let mut ex = match mechanism {
            "PLAIN" => Exchange::Plain,
            "LOGIN" => Exchange::LoginUser,
            _ => return Err(SaslError::UnknownMechanism),
        };
        match initial {
            Some(line) => {
                let step = ex.step(line.as_bytes())?;
                Ok((ex, step))
            }
            None => {
                let challenge = match ex {
                    Exchange::LoginUser => "VXNlcm5hbWU6", // "Username:"
                    _ => "",
                };
                Ok((ex, Step::Challenge(challenge)))
            }
        }
    }

    pub fn step(&mut self, line: &[u8]) -> Result<Step, SaslError> {
        if line == b"*" {
            return Err(SaslError::Cancelled);
        }
        let data = if line == b"=" {
            Vec::new()
        } else {
            B64.decode(line).map_err(|_| SaslError::BadBase64)?
        };
        match self {
            Exchange::Plain => parse_plain(data).map(Step::Done),
            Exchange::LoginUser => {
                let user = String::from_utf8(data).map_err(|_| SaslError::Malformed)?;
                if user.is_empty() {
                    return Err(SaslError::Malformed);
                }
                *self = Exchange::LoginPassword { user };
                Ok(Step::Challenge("UGFzc3dvcmQ6")) // "Password:"
            }
            Exchange::LoginPassword { user } => Ok(Step::Done(Credentials {
                authzid: String::new(),
                user: std::mem::take(user),
                password: Secret(data),
            })),
        }
    }
}

fn parse_plain(data: Vec<u8>) -> Result<Credentials, SaslError> {
    let data = Secret(data);
    let mut parts = data.expose().splitn(3, |&b| b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    let creds = Credentials {
        authzid: text(authzid)?,
        user: text(user)?,
        password: Secret(password.to_vec()),
    };
    if creds.user.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        B64.encode(s)
    }

    #[test]
    fn plain_with_initial_response() {
        let (_, step) = Exchange::start("PLAIN", Some(&b64(b"\0alice\0p w"))).unwrap();
        assert_eq!(
            step,
            Step::Done(Credentials {
                authzid: String::new(),
                user: "alice".into(),
                password: Secret(b"p w".to_vec())
            })
        );
    }

    #[test]
    fn plain_with_continuation() {
        let (mut ex, step) = Exchange::start("PLAIN", None).unwrap();
        assert_eq!(step, Step::Challenge(""));
        let step = ex.step(b64(b"admin\0bob\0x").as_bytes()).unwrap();
        assert!(matches!(step, Step::Done(c) if c.authzid == "admin" && c.user == "bob"));
    }

    #[test]
    fn login_two_steps() {
        let (mut ex, step) = Exchange::start("LOGIN", None).unwrap();
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6"));
        assert_eq!(
            ex.step(b64(b"carol").as_bytes()).unwrap(),
            Step::Challenge("UGFzc3dvcmQ6")
        );
        let done = ex.step(b64(b"s3cret").as_bytes()).unwrap();
        assert!(
            matches!(done, Step::Done(c) if c.user == "carol" && c.password.expose() == b"s3cret")
        );
    }

    #[test]
    fn failures() {
        assert_eq!(
            Exchange::start("CRAM-MD5", None).unwrap_err(),
            SaslError::UnknownMechanism
        );
        let (mut ex, _) = Exchange::start("PLAIN", None).unwrap();
        assert_eq!(ex.step(b"*").unwrap_err(), SaslError::Cancelled);
        assert_eq!(ex.step(b"!!!").unwrap_err(), SaslError::BadBase64);
        assert_eq!(
            ex.step(b64(b"nonul").as_bytes()).unwrap_err(),
            SaslError::Malformed
        );
        assert_eq!(ex.step(b"=").unwrap_err(), SaslError::Malformed);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let (_, step) = Exchange::start("PLAIN", Some(&b64(b"\0u\0hunter2"))).unwrap();
        assert!(!format!("{step:?}").contains("hunter2"));
    }
}

/// The user a bearer-token response (XOAUTH2 or OAUTHBEARER, RFC 7628)
/// names, for routing and logs; the token itself is not looked at.
pub fn bearer_user(mechanism: &str, decoded: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(decoded).ok()?;
    let user = match mechanism {
        // user={user}^Aauth=Bearer {token}^A^A
        "XOAUTH2" => text.strip_prefix("user=")?.split('\x01').next()?,
        // n,a={user},^Ahost=...^Aauth=Bearer {token}^A^A
        "OAUTHBEARER" => text
            .split('\x01')
            .next()?
            .split(',')
            .find_map(|f| f.strip_prefix("a="))?,
        _ => return None,
    };
    (!user.is_empty()).then(|| user.replace("=2C", ",").replace("=3D", "="))
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    #[test]
    fn users_in_bearer_responses() {
        assert_eq!(
            bearer_user(
                "XOAUTH2",
                b"user=ann@example.org\x01auth=Bearer tok\x01\x01"
            )
            .as_deref(),
            Some("ann@example.org")
        );
        assert_eq!(
            bearer_user(
                "OAUTHBEARER",
                b"n,a=bob=2Cx@example.org,\x01host=h\x01auth=Bearer t\x01\x01"
            )
            .as_deref(),
            Some("bob,x@example.org")
        );
        assert_eq!(bearer_user("XOAUTH2", b"auth=Bearer tok\x01\x01"), None);
        assert_eq!(
            bearer_user("OAUTHBEARER", b"n,,\x01auth=Bearer t\x01\x01"),
            None
        );
    }
}
