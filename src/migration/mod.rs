//! Migration from another POP3 server: when popgate first meets a mailbox
//! it reads the old server's UIDLs and headers (`pop3_client`), hashes the
//! headers on both sides (`headers`), pairs the messages (`matcher`) and
//! stores the old UIDLs as the mailbox's exceptions. No I/O on the IMAP
//! side here: `gateway::migration` hashes the IMAP headers and
//! `gateway::import` runs the migration ahead of time for many users.

pub mod headers;
pub mod matcher;
pub mod pop3_client;
pub mod pop3_wire;

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::migration::{OnFailure, Pop3Source, SourceLogin};
use crate::config::UpstreamTls;
use crate::net::tls;
use crate::secret::Secret;
use matcher::OldMessage;
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
                crate::files::master_password(path)
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
