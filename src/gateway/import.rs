//! The migration ahead of time, for many users: each user's mailbox that
//! the store does not know yet is read on the old POP3 server and on the
//! IMAP server and stored, as the first login would; users whose mailbox
//! has a record are skipped, so an interrupted import can be run again.
//!
//! The users file has one user per line (blank lines and lines starting
//! with `#` are skipped). With `login: master` a line is the login name;
//! with `login: user` it is the login name, a TAB, and the password.
//! The IMAP server is logged in to with that password, or with
//! `auth.master_user` for `login: master`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::uidls::OldServer;
use super::Context;
use crate::config::migration::SourceLogin;
use crate::config::MasterLogin;
use crate::migration::Owner;
use crate::secret::Secret;
use crate::state::MailboxKey;

/// A user to import.
#[derive(Debug, Clone)]
pub struct ImportUser {
    pub name: String,
    pub password: Option<Secret>,
}

/// Reads a users file; an error names the line (never its password).
pub fn parse_users(text: &str, login: SourceLogin) -> Result<Vec<ImportUser>, String> {
    let mut out: Vec<ImportUser> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, password) = match (login, line.split_once('\t')) {
            (SourceLogin::Master, None) => (line, None),
            (SourceLogin::User, Some((n, p))) if !p.is_empty() => {
                (n, Some(Secret(p.as_bytes().to_vec())))
            }
            (SourceLogin::Master, Some(_)) => {
                return Err(format!(
                    "line {}: login: master takes a user name alone, no password",
                    i + 1
                ));
            }
            (SourceLogin::User, _) => {
                return Err(format!(
                    "line {}: login: user needs user<TAB>password",
                    i + 1
                ));
            }
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("line {}: not a user name", i + 1));
        }
        if out.iter().any(|u| u.name == name) {
            return Err(format!("line {}: {name} is listed twice", i + 1));
        }
        out.push(ImportUser {
            name: name.to_string(),
            password,
        });
    }
    Ok(out)
}

/// What became of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored: old messages read, IMAP messages given an old UIDL, and
    /// those left with template UIDLs.
    Migrated {
        old_messages: usize,
        matched: usize,
        unmatched: usize,
    },
    /// The store knew the mailbox already.
    Skipped,
    /// Nothing stored; the reason.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub user: String,
    pub outcome: Outcome,
}

/// Imports `users`, `concurrency` at a time, calling `done` after each
/// user; returns the summaries in the order of `users`. Needs a context
/// with `state` and `migration` configured.
pub async fn import(
    ctx: Arc<Context>,
    users: Vec<ImportUser>,
    concurrency: usize,
    done: impl Fn(&Summary) + Send + Sync + 'static,
) -> Vec<Summary> {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let done = Arc::new(done);
    let mut tasks = Vec::with_capacity(users.len());
    for u in users {
        let (ctx, slots, done) = (ctx.clone(), slots.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let outcome = one(&ctx, &u).await.unwrap_or_else(Outcome::Failed);
            let s = Summary {
                user: u.name,
                outcome,
            };
            done(&s);
            s
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(s) => out.push(s),
            Err(e) => out.push(Summary {
                user: String::new(),
                outcome: Outcome::Failed(format!("the import task failed: {e}")),
            }),
        }
    }
    out
}

async fn one(ctx: &Arc<Context>, u: &ImportUser) -> Result<Outcome, String> {
    let (Some(memory), Some(source)) = (&ctx.uidls, &ctx.migration) else {
        return Err("the import needs state and migration in the config".into());
    };
    let route = ctx.router.route(&u.name);
    let backend = ctx.backends[route.backend].clone();
    let key = MailboxKey {
        route: backend.name.clone(),
        user: route.user.to_lowercase(),
        folder: ctx.config.mailbox.first().to_string(),
    };
    if memory
        .knows(&key)
        .await
        .map_err(|e| format!("store: {e}"))?
    {
        return Ok(Outcome::Skipped);
    }
    let owner = Owner {
        login: &u.name,
        password: u.password.as_ref(),
    };
    let old = source.read_old(&owner).await.map_err(|e| e.to_string())?;

    let (mut imap, _counted) = backend
        .connect(None)
        .await
        .map_err(|e| format!("IMAP server: {e}"))?;
    let login = match (&u.password, &ctx.master) {
        (Some(password), _) => imap.login("", &route.user, password).await,
        (None, Some((master, password))) => match ctx.config.auth.master_login {
            MasterLogin::Authzid => imap.login(&route.user, master, password).await,
            MasterLogin::Separator => {
                let sep = &ctx.config.auth.master_separator;
                let as_master = format!("{}{sep}{master}", route.user);
                imap.login("", &as_master, password).await
            }
        },
        (None, None) => {
            return Err("login: master reads the IMAP server as auth.master_user: set it and auth.master_password_file".into());
        }
    };
    login.map_err(|e| format!("IMAP login: {e}"))?;
    let (selected, listing) = imap
        .open_mailbox(
            ctx.config.mailbox.first(),
            ctx.config.delete.hiding_keyword(),
        )
        .await
        .map_err(|e| format!("IMAP SELECT: {e}"))?;
    let r = memory
        .remember(
            &mut imap,
            &key,
            selected.uid_validity,
            listing,
            &ctx.config.uidl_format,
            &ctx.metrics,
            Some(OldServer::Read(old)),
        )
        .await
        .map_err(|e| e.to_string())?;
    imap.logout().await;
    match r.migrated {
        Some(m) => Ok(Outcome::Migrated {
            old_messages: m.old_messages,
            matched: m.matched,
            unmatched: m.unmatched,
        }),
        // A record appeared meanwhile, or the store failed (logged).
        None if memory.knows(&key).await.unwrap_or(false) => Ok(Outcome::Skipped),
        None => Err("the store could not save the record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_files() {
        let u = parse_users("# comment\nalice\n\nbob\r\n", SourceLogin::Master).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].name, "bob");
        assert!(u[0].password.is_none());
        let u = parse_users("alice\tpw with space\n", SourceLogin::User).unwrap();
        assert_eq!(u[0].password.as_ref().unwrap().expose(), b"pw with space");
        let e = parse_users("alice\tsecret-pw\nbob\n", SourceLogin::User).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("secret-pw"), "{e}");
        let e = parse_users("alice\t\n", SourceLogin::User).unwrap_err();
        assert!(e.contains("line 1"), "an empty password: {e}");
        let e = parse_users("alice\tsecret-pw\n", SourceLogin::Master).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("secret-pw"), "{e}");
        assert!(parse_users("a\na\n", SourceLogin::Master)
            .unwrap_err()
            .contains("twice"));
        assert!(parse_users("a b\n", SourceLogin::Master).is_err());
    }
}
