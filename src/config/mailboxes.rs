//! `mailbox`: one folder, or several that make up the maildrop together.

use serde::Deserialize;

/// `mailbox: INBOX` or `mailbox: [INBOX, Newsletters]`: the maildrop is
/// these folders' messages, folder after folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailboxes(pub Vec<String>);

impl Mailboxes {
    /// The first folder: the one a single-folder setup names.
    pub fn first(&self) -> &str {
        self.0.first().map_or("INBOX", String::as_str)
    }
}

impl Default for Mailboxes {
    fn default() -> Self {
        Mailboxes(vec!["INBOX".into()])
    }
}

impl<'de> Deserialize<'de> for Mailboxes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMore {
            One(String),
            More(Vec<String>),
        }
        match OneOrMore::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a folder name or a list of folder names")
        })? {
            OneOrMore::One(name) => Ok(Mailboxes(vec![name])),
            OneOrMore::More(names) => Ok(Mailboxes(names)),
        }
    }
}

impl std::fmt::Display for Mailboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}
