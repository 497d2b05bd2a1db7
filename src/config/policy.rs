//! What a POP3 deletion does upstream (`delete`), the byte-level fixes for
//! old clients (`client_workarounds`), and RFC 2449's EXPIRE and
//! LOGIN-DELAY (`policy`).

use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigErrorKind};

/// What QUIT does with the messages a client marked with DELE.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delete {
    pub action: DeleteAction,
    /// For `move`: the target folder, created when missing.
    pub folder: String,
    /// For `flag`: the keyword set; messages carrying it are hidden from
    /// POP3 and kept.
    pub keyword: String,
}

impl Default for Delete {
    fn default() -> Self {
        Delete {
            action: DeleteAction::Expunge,
            folder: "Trash".into(),
            keyword: "$POP3Deleted".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteAction {
    /// `\Deleted` and UID EXPUNGE of exactly those messages.
    #[default]
    Expunge,
    /// UID MOVE (or UID COPY, then the removal) into `delete.folder`.
    Move,
    /// Set `delete.keyword`; the message stays where it is.
    Flag,
}

impl Delete {
    /// The keyword that hides messages from POP3, in `flag` mode only.
    pub fn hiding_keyword(&self) -> Option<&str> {
        (self.action == DeleteAction::Flag).then_some(self.keyword.as_str())
    }

    pub(super) fn check(
        &self,
        mailboxes: &[String],
    ) -> Option<(Vec<&'static str>, ConfigErrorKind)> {
        use ConfigErrorKind::*;
        match self.action {
            DeleteAction::Expunge => None,
            DeleteAction::Move if self.folder.is_empty() => Some((vec!["delete", "folder"], Empty)),
            DeleteAction::Move
                if mailboxes
                    .iter()
                    .any(|m| self.folder.eq_ignore_ascii_case(m)) =>
            {
                let why = "the folder is part of the maildrop; name another folder";
                Some((vec!["delete", "folder"], Conflict(why.into())))
            }
            DeleteAction::Move => None,
            DeleteAction::Flag if !is_keyword(&self.keyword) => {
                let why = "an IMAP keyword is one word of letters, digits and `$_-.`, \
                           not starting with a backslash";
                Some((vec!["delete", "keyword"], Requires(why.into())))
            }
            DeleteAction::Flag => None,
        }
    }
}

/// An IMAP keyword popgate can send as an atom without quoting. Stricter
/// than RFC 3501's atom: anything else is unlikely meant.
fn is_keyword(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"$_-.".contains(&b))
}

/// Byte-level fixes for clients that break on standard POP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Workaround {
    /// NUL bytes in RETR and TOP become 0x80: Outlook hangs on NULs.
    #[serde(rename = "outlook-no-nuls")]
    OutlookNoNuls,
    /// `TOP n 0` of a message without a body ends with an empty line, as
    /// Outlook Express and old Netscape expect.
    #[serde(rename = "oe-ns-eoh")]
    OeNsEoh,
}

/// RFC 2449's EXPIRE and LOGIN-DELAY: announced in CAPA, and enforced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Days a retrieved message may stay: at QUIT, messages the session
    /// retrieved whose arrival day is more than this many days back are
    /// removed as `delete.action` says (0: every retrieved message).
    /// Announced as `EXPIRE n`. Absent: no EXPIRE.
    pub expire: Option<u32>,
    /// Least time between two logins of one user, refused with
    /// `[LOGIN-DELAY]`; whole seconds. Announced as `LOGIN-DELAY n`. 0s: none.
    #[serde(deserialize_with = "duration::deserialize")]
    pub login_delay: Duration,
}

impl Policy {
    pub(super) fn check(&self) -> Option<(Vec<&'static str>, ConfigErrorKind)> {
        if self.login_delay.subsec_nanos() != 0 {
            let why = "CAPA states LOGIN-DELAY in whole seconds: use e.g. \"15m\" or \"90s\"";
            return Some((
                vec!["policy", "login_delay"],
                ConfigErrorKind::Requires(why.into()),
            ));
        }
        if self.expire.is_some_and(|d| d > 36_500) {
            let range = ConfigErrorKind::OutOfRange("0".into(), "36500".into());
            return Some((vec!["policy", "expire"], range));
        }
        None
    }
}
