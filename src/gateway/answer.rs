//! Every refusal a POP3 client can hear, and the one function that words
//! it. Sessions and the listener name what went wrong; only [`answer`]
//! decides the response code and the text.

use std::borrow::Cow;

use super::maildrop::MessageError;
use crate::metrics::LoginResult;
use crate::pop3::response::{Answer, RespCode};
use crate::pop3::sasl::SaslError;
use crate::pop3::CommandError;

/// Why a login could not open the maildrop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginFailure {
    /// The credentials were refused.
    AuthFailed,
    /// The upstream is unreachable, failed, or asked to come back later.
    Unavailable,
    /// The upstream says the mailbox is locked.
    InUse,
    /// The user has as many sessions as allowed already.
    UserLimit,
    /// The configured mailbox does not exist.
    NoMailbox,
    /// Too many attempts for this user or network are waiting already.
    Throttled,
    /// The state store cannot be reached and `state.on_unavailable` is
    /// `refuse`.
    StoreUnavailable,
    /// The authorization server refused the user's refresh token.
    Reenrol,
    /// The authorization server (or the token store) cannot be used now.
    TokenUnavailable,
    /// The user logged in less than `policy.login_delay` ago.
    LoginDelay,
}

impl LoginFailure {
    /// The `result` label of `popgate_logins_total`.
    pub(crate) fn result(self) -> LoginResult {
        match self {
            LoginFailure::AuthFailed => LoginResult::AuthFailed,
            LoginFailure::Unavailable => LoginResult::UpstreamUnavailable,
            LoginFailure::InUse | LoginFailure::UserLimit => LoginResult::InUse,
            LoginFailure::NoMailbox => LoginResult::MailboxError,
            LoginFailure::Throttled | LoginFailure::LoginDelay => LoginResult::Throttled,
            LoginFailure::StoreUnavailable => LoginResult::StoreUnavailable,
            LoginFailure::Reenrol => LoginResult::AuthFailed,
            LoginFailure::TokenUnavailable => LoginResult::UpstreamUnavailable,
        }
    }
}

/// What went wrong, as far as the client is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unparsable(CommandError),
    LineTooLong,
    TooManyBadCommands,
    IdleTimeout,
    LoginTimeout,
    NotLoggedIn,
    AlreadyLoggedIn,
    NoUserGiven,
    PlaintextDisallowed,
    StlsUnavailable,
    StlsPipelined,
    UnsupportedMechanism,
    /// The first line of a SASL exchange was unusable.
    SaslStart(SaslError),
    /// A later response of the exchange was.
    Sasl(SaslError),
    AuthDataTooLong,
    MalformedAuthData,
    CramInitialResponse,
    ApopUnavailable,
    Login(LoginFailure),
    Message(MessageError),
    CannotRead,
    NotRemoved,
    TooManyConnections,
}

/// The answer to a refusal.
pub(crate) fn answer(refusal: &Refusal) -> Answer {
    use Refusal::*;
    let (code, text): (Option<RespCode>, Cow<'static, str>) = match refusal {
        Unparsable(e) => (None, format!("{e}.").into()),
        LineTooLong => (None, "Line too long.".into()),
        TooManyBadCommands => (None, "Too many bad commands, closing.".into()),
        IdleTimeout => (None, "Autologout; idle for too long.".into()),
        LoginTimeout => (None, "No login within the time allowed, closing.".into()),
        NotLoggedIn => (None, "Not logged in.".into()),
        AlreadyLoggedIn => (None, "Already logged in.".into()),
        NoUserGiven => (None, "No user name given; send USER first.".into()),
        PlaintextDisallowed => (
            Some(RespCode::Auth),
            "Plaintext authentication disallowed on non-secure connections; \
             use STLS or POP3S (port 995)."
                .into(),
        ),
        StlsUnavailable => (None, "STLS is not available now.".into()),
        StlsPipelined => (
            None,
            "Commands sent after STLS before TLS; send STLS alone.".into(),
        ),
        UnsupportedMechanism => (None, "Unsupported authentication mechanism.".into()),
        SaslStart(e) => (None, format!("{e}.").into()),
        Sasl(e) => {
            let code = (*e != SaslError::Cancelled).then_some(RespCode::Auth);
            (code, format!("{e}.").into())
        }
        AuthDataTooLong => (None, "Authentication data too long.".into()),
        MalformedAuthData => (
            Some(RespCode::Auth),
            "Malformed authentication data.".into(),
        ),
        CramInitialResponse => (None, "CRAM-MD5 takes no initial response.".into()),
        ApopUnavailable => (None, "APOP is not available.".into()),
        Login(LoginFailure::AuthFailed) => (Some(RespCode::Auth), "Authentication failed.".into()),
        Login(LoginFailure::Unavailable) => (
            Some(RespCode::SysTemp),
            "Mail server unavailable, try again later.".into(),
        ),
        Login(LoginFailure::InUse) => (Some(RespCode::InUse), "Mailbox is in use.".into()),
        Login(LoginFailure::UserLimit) => (
            Some(RespCode::InUse),
            "Mailbox is in use by another POP3 session.".into(),
        ),
        Login(LoginFailure::Throttled) => (
            Some(RespCode::SysTemp),
            "Too many login attempts, try again later.".into(),
        ),
        Login(LoginFailure::StoreUnavailable) => (
            Some(RespCode::SysTemp),
            "Mailbox state unavailable, try again later.".into(),
        ),
        Login(LoginFailure::Reenrol) => (
            Some(RespCode::Auth),
            "Mail access has expired or was revoked; enrol again with your mail administrator."
                .into(),
        ),
        Login(LoginFailure::TokenUnavailable) => (
            Some(RespCode::SysTemp),
            "Sign-in service unavailable, try again later.".into(),
        ),
        Login(LoginFailure::LoginDelay) => (
            Some(RespCode::LoginDelay),
            "Logged in too recently, try again later.".into(),
        ),
        Login(LoginFailure::NoMailbox) => {
            (Some(RespCode::SysPerm), "Mailbox does not exist.".into())
        }
        Message(e) => (None, format!("{e}.").into()),
        CannotRead => (None, "Message cannot be read now.".into()),
        NotRemoved => (
            Some(RespCode::SysTemp),
            "Some deleted messages were not removed; try again later.".into(),
        ),
        TooManyConnections => (
            Some(RespCode::SysTemp),
            "Too many connections, try again later.".into(),
        ),
    };
    Answer { code, text }
}

#[cfg(test)]
mod tests {
    use super::{answer, LoginFailure, Refusal};
    use crate::gateway::maildrop::MessageError;
    use crate::pop3::response::RespCode;

    #[test]
    fn codes_follow_the_kind_of_failure() {
        let a = answer(&Refusal::Login(LoginFailure::Unavailable));
        assert_eq!(a.code, Some(RespCode::SysTemp));
        assert_eq!(a.text, "Mail server unavailable, try again later.");
        let a = answer(&Refusal::Message(MessageError::Gone));
        assert_eq!(a.code, None);
        assert_eq!(
            a.text,
            "Message was removed from the mailbox by another client."
        );
        assert_eq!(
            answer(&Refusal::TooManyConnections).code,
            Some(RespCode::SysTemp)
        );
        assert_eq!(
            answer(&Refusal::PlaintextDisallowed).code,
            Some(RespCode::Auth)
        );
    }
}
