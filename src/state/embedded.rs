//! The embedded backend: one redb file in `state.path`. redb is pure Rust
//! (nothing to build in C), copy-on-write with checksummed commits: a crash
//! or kill -9 leaves the last committed transaction, never half of one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::{MailboxKey, Memory, StateError, StateStore};

/// The file's name inside `state.path`.
pub const FILE_NAME: &str = "popgate-state.redb";

const MAILBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("mailboxes");

pub struct Embedded {
    db: Arc<Database>,
    file: PathBuf,
    /// The inode opened, to notice the file being deleted or replaced.
    inode: u64,
}

impl Embedded {
    /// Opens (or creates) the store in `dir`. A file that is not a store,
    /// or a damaged one, is an error naming it.
    pub fn open(dir: &Path) -> Result<Embedded, StateError> {
        Embedded::open_with(dir, true)
    }

    /// Opens without reading every record first: for the operator commands,
    /// which must reach a store with one damaged record to forget it.
    pub fn open_unchecked(dir: &Path) -> Result<Embedded, StateError> {
        Embedded::open_with(dir, false)
    }

    fn open_with(dir: &Path, check_records: bool) -> Result<Embedded, StateError> {
        let file = dir.join(FILE_NAME);
        let err = |reason: String| StateError::Open {
            path: file.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        let mut db = Database::create(&file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StateError::InUse(file.display().to_string())
            }
            e => err(e.to_string()),
        })?;
        // Give back the pages earlier commits freed: the file stays near
        // the size of what it holds.
        db.compact().map_err(|e| err(e.to_string()))?;
        // Read every record once: a damaged one stops start-up here rather
        // than surfacing at some user's login.
        let txn = db.begin_read().map_err(|e| err(e.to_string()))?;
        match txn.open_table(MAILBOXES) {
            Ok(table) if check_records => {
                for row in table.iter().map_err(|e| err(e.to_string()))? {
                    let (k, v) = row.map_err(|e| err(e.to_string()))?;
                    Memory::decode(v.value()).map_err(|_| {
                        let mut parts = k.value().split('\0');
                        let mut next = || parts.next().unwrap_or_default();
                        let (route, user, folder) = (next(), next(), next());
                        err(format!(
                            "the record of route {route:?}, user {user:?}, folder \
                             {folder:?} is corrupt; `popgate uidl forget` drops it"
                        ))
                    })?;
                }
            }
            Ok(_) | Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.to_string())),
        }
        drop(txn);
        let inode = std::fs::metadata(&file)
            .map_err(|e| err(e.to_string()))?
            .ino();
        Ok(Embedded {
            db: Arc::new(db),
            file,
            inode,
        })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The file still at its path? Writing to a deleted one would lose
    /// every later UIDL silently.
    fn present(&self) -> Result<(), StateError> {
        match std::fs::metadata(&self.file) {
            Ok(m) if m.ino() == self.inode => Ok(()),
            _ => Err(StateError::Lost(self.file.display().to_string())),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StateError> {
        self.present()?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StateError::Backend(e.to_string()))?
            .map_err(StateError::Backend)
    }
}

#[async_trait]
impl StateStore for Embedded {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Memory>, StateError> {
        let key = mailbox.encoded();
        let bytes = self
            .blocking(move |db| {
                let txn = db.begin_read().map_err(text)?;
                let table = match txn.open_table(MAILBOXES) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                };
                let value = table.get(key.as_str()).map_err(text)?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .await?;
        bytes.map(|b| Memory::decode(&b)).transpose()
    }

    async fn save(&self, mailbox: &MailboxKey, memory: &Memory) -> Result<(), StateError> {
        let key = mailbox.encoded();
        let bytes = memory.encode();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(text)?;
            {
                let mut table = txn.open_table(MAILBOXES).map_err(text)?;
                table.insert(key.as_str(), bytes.as_slice()).map_err(text)?;
            }
            txn.commit().map_err(text)
        })
        .await
    }

    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError> {
        let key = mailbox.encoded();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(text)?;
            let removed = {
                let mut table = txn.open_table(MAILBOXES).map_err(text)?;
                let old = table.remove(key.as_str()).map_err(text)?;
                old.is_some()
            };
            txn.commit().map_err(text)?;
            Ok(removed)
        })
        .await
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
