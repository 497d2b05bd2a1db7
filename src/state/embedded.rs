//! The embedded backend: one SQLite file in `state.path`, through rusqlite
//! with its bundled library. A commit goes through SQLite's rollback
//! journal with `synchronous=FULL`: a crash, a kill -9 or a power loss
//! leaves the last committed record of every mailbox, never half of one.
//! With `auto_vacuum=FULL` the pages an overwritten record freed are given
//! back at commit, so the file stays the size of what it holds.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use super::{MailboxKey, Memory, Saved, Stamp, StateError, StateStore, Stored};

/// The file's name inside `state.path`.
pub const FILE_NAME: &str = "popgate-state.sqlite";

/// "popg": marks the file as popgate's, so another program's SQLite
/// database given by mistake is refused rather than written into.
const APPLICATION_ID: i32 = 0x706f_7067;

/// How long a statement waits for another process's lock (a `popgate
/// uidl` command run beside the gateway) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Embedded {
    conn: Arc<Mutex<Connection>>,
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

    fn open_with(dir: &Path, records: bool) -> Result<Embedded, StateError> {
        let file = dir.join(FILE_NAME);
        let err = |reason: String| StateError::Open {
            path: file.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        let conn = Connection::open(&file).map_err(|e| err(e.to_string()))?;
        prepare(&conn).map_err(err)?;
        // Read every record once: a damaged one stops start-up here rather
        // than surfacing at some user's login.
        if records {
            check_records(&conn).map_err(err)?;
        }
        let inode = std::fs::metadata(&file)
            .map_err(|e| err(e.to_string()))?
            .ino();
        Ok(Embedded {
            conn: Arc::new(Mutex::new(conn)),
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

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        self.present()?;
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StateError::Backend(e.to_string()))?
        .map_err(|e| StateError::Backend(e.to_string()))
    }
}

/// Settings, the one table, and the checks that the file is a sound
/// popgate store.
fn prepare(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(text)?;
    // auto_vacuum only takes effect before the first table exists, which
    // is when popgate creates the file.
    conn.execute_batch(
        "PRAGMA auto_vacuum = FULL;
         PRAGMA journal_mode = DELETE;
         PRAGMA synchronous = FULL;",
    )
    .map_err(text)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(text)?;
    if check != "ok" {
        return Err(format!("the database is damaged: {check}"));
    }
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(text)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(text)?;
    match (id, tables) {
        (APPLICATION_ID, _) => {}
        (0, 0) => conn
            .execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID};
                 CREATE TABLE mailboxes (key BLOB PRIMARY KEY, memory BLOB NOT NULL);"
            ))
            .map_err(text)?,
        _ => return Err("an SQLite database, but not a popgate store".into()),
    }
    // The token broker's table (`tokens` reads and writes it), also in
    // stores made before it existed.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS oauth_tokens (
            route TEXT NOT NULL, user TEXT NOT NULL, sealed BLOB NOT NULL,
            PRIMARY KEY (route, user))",
    )
    .map_err(text)?;
    Ok(())
}

fn check_records(conn: &Connection) -> Result<(), String> {
    let mut rows = conn
        .prepare("SELECT key, memory FROM mailboxes")
        .map_err(text)?;
    let mut rows = rows.query([]).map_err(text)?;
    while let Some(row) = rows.next().map_err(text)? {
        let key: Vec<u8> = row.get(0).map_err(text)?;
        let memory: Vec<u8> = row.get(1).map_err(text)?;
        if Memory::decode(&memory).is_err() {
            let key = String::from_utf8_lossy(&key);
            let mut parts = key.split('\0');
            let mut next = || parts.next().unwrap_or_default();
            let (route, user, folder) = (next(), next(), next());
            return Err(format!(
                "the record of route {route:?}, user {user:?}, folder {folder:?} is \
                 corrupt; `popgate uidl forget` drops it"
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for Embedded {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Stored>, StateError> {
        let key = mailbox.encoded();
        let bytes = self
            .blocking(move |conn| {
                conn.query_row(
                    "SELECT memory FROM mailboxes WHERE key = ?1",
                    [key.as_bytes()],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()
            })
            .await?;
        bytes.map(|b| Stored::decode(&b)).transpose()
    }

    async fn save(
        &self,
        mailbox: &MailboxKey,
        memory: &Memory,
        expected: Option<&Stored>,
    ) -> Result<Saved, StateError> {
        let key = mailbox.encoded();
        let bytes = memory.encode();
        let expected = expected.map(|s| s.stamp.clone());
        self.blocking(move |conn| {
            // IMMEDIATE takes the write lock before the read, so no other
            // process writes between the comparison and the update.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT memory FROM mailboxes WHERE key = ?1",
                    [key.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            if current.as_deref().map(Stamp::of) != expected {
                return Ok(Saved::Conflict);
            }
            tx.execute(
                "INSERT INTO mailboxes (key, memory) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET memory = excluded.memory",
                (key.as_bytes(), bytes.as_slice()),
            )?;
            tx.commit()?;
            Ok(Saved::Done)
        })
        .await
    }

    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError> {
        let key = mailbox.encoded();
        self.blocking(move |conn| {
            conn.execute("DELETE FROM mailboxes WHERE key = ?1", [key.as_bytes()])
                .map(|n| n > 0)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.present()
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
