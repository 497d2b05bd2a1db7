//! Migration from another POP3 server: when popgate first meets a mailbox
//! it reads the old server's UIDLs and headers (`pop3_client`), hashes the
//! headers on both sides (`headers`), pairs the messages (`matcher`) and
//! stores the old UIDLs as the mailbox's exceptions. `import` does the same
//! ahead of time for a list of users.

pub mod headers;
pub mod import;
pub mod matcher;
pub mod pop3_client;
pub mod pop3_wire;

use std::collections::HashMap;

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::migration::{OnFailure, Pop3Source, SourceLogin};
use crate::config::UpstreamTls;
use crate::gateway::backend::Imap;
use crate::gateway::maildrop::uid_sets;
use crate::imap::ClientError;
use crate::net::tls;
use crate::pop3::uidl::UidlTemplate;
use crate::secret::Secret;
use crate::state::{Memory, Print};
use matcher::{NewMessage, OldMessage};
use pop3_client::Pop3Error;

/// The old server, prepared once at start: its TLS and master password.
pub struct Source {
    pub(crate) config: Pop3Source,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    master: Option<(String, Secret)>,
}

/// Whose mailbox is migrated: the name the user logs in with (and so
/// logged in with on the old server) and the password they gave, if any.
pub struct Owner<'a> {
    pub login: &'a str,
    pub password: Option<&'a Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("login: user needs the user's password, and this login gave none (APOP, CRAM-MD5, a token or a master login); use login: master")]
    NoPassword,
    #[error("old POP3 server: {0}")]
    Pop3(#[from] Pop3Error),
}

impl Source {
    /// Loads what `migration.pop3` names; the error names the key.
    pub fn new(c: &Pop3Source) -> Result<Source, String> {
        let tls = match c.tls {
            UpstreamTls::None => None,
            UpstreamTls::Starttls | UpstreamTls::Implicit => {
                let config = tls::client_config(c.ca_file.as_deref(), false)
                    .map_err(|e| format!("migration.pop3.ca_file: {e}"))?;
                let name = c
                    .server_name
                    .clone()
                    .unwrap_or_else(|| c.address.host().to_string());
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    format!("migration.pop3.server_name: {name:?} is not a valid name")
                })?;
                Some((TlsConnector::from(config), name))
            }
        };
        let master = match (&c.login, &c.master_user, &c.master_password_file) {
            (SourceLogin::Master, Some(user), Some(path)) => Some((
                user.clone(),
                crate::gateway::credentials::master_password(path)
                    .map_err(|e| format!("migration.pop3.master_password_file: {e}"))?,
            )),
            _ => None,
        };
        Ok(Source {
            config: c.clone(),
            tls,
            master,
        })
    }

    pub fn on_failure(&self) -> OnFailure {
        self.config.on_failure
    }

    /// Every message's UIDL, size and header hash on the old server.
    pub(crate) async fn read_old(
        &self,
        owner: &Owner<'_>,
    ) -> Result<Vec<OldMessage>, MigrationError> {
        let read = match &self.master {
            Some((master, password)) => {
                let sep = &self.config.master_separator;
                let user = format!("{}{sep}{master}", owner.login);
                pop3_client::read_mailbox(self, &user, password).await
            }
            None => {
                let password = owner.password.ok_or(MigrationError::NoPassword)?;
                pop3_client::read_mailbox(self, owner.login, password).await
            }
        };
        Ok(read?)
    }
}

/// The mailbox's first memory from the old server's messages: hashes the
/// whole header of every message in `prints` (once, at migration), pairs,
/// and returns the memory with the number of messages paired.
pub(crate) async fn assign(
    imap: &mut Imap,
    old: &[OldMessage],
    prints: &[Print],
    uid_validity: u32,
    template: &UidlTemplate,
) -> Result<(Memory, usize), ClientError> {
    let uids: Vec<u32> = prints.iter().map(|p| p.uid).collect();
    let hashes = header_hashes(imap, &uids).await?;
    let new: Vec<NewMessage> = prints
        .iter()
        .filter_map(|p| {
            hashes.get(&p.uid).map(|&hash| NewMessage {
                uid: p.uid,
                size: p.size,
                hash,
            })
        })
        .collect();
    let pairs = matcher::pair(old, &new);
    Ok(matcher::memory(prints, &pairs, old, uid_validity, template))
}

/// The migration hash of each message's whole header, by UID.
async fn header_hashes(imap: &mut Imap, uids: &[u32]) -> Result<HashMap<u32, u128>, ClientError> {
    let mut out = HashMap::with_capacity(uids.len());
    for set in uid_sets(uids, 900) {
        let tag = imap.fetch_bodies(&set, "BODY.PEEK[HEADER]").await?;
        while let Some(start) = imap.next_body(&tag).await? {
            let mut header = Vec::with_capacity(start.len.min(headers::MAX_HEADER as u64) as usize);
            while let Some(chunk) = imap.body_chunk().await? {
                let room = headers::MAX_HEADER.saturating_sub(header.len());
                header.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if let Some(uid) = start.uid {
                out.insert(uid, headers::hash(&header));
            }
        }
    }
    Ok(out)
}
