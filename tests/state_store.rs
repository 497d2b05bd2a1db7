//! The embedded UIDL store: what it keeps survives reopening, a damaged
//! file stops `--check` and start-up with an error naming it, and a file
//! deleted while open is noticed rather than written to in vain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popgate::state::embedded::{Embedded, FILE_NAME};
use popgate::state::{MailboxKey, Memory, Print, StateError, StateStore};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("popgate-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(user: &str) -> MailboxKey {
    MailboxKey {
        route: "default".into(),
        user: user.into(),
        folder: "INBOX".into(),
    }
}

fn memory(n: u32) -> Memory {
    Memory {
        uid_validity: 1234,
        prints: (1..=n)
            .map(|uid| Print {
                uid,
                size: 2000 + u64::from(uid),
                date: 1_700_000_000 + uid,
                hash: u64::from(uid).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            })
            .collect(),
        exceptions: [(2, "0000000a000004d1".to_string())].into(),
    }
}

#[tokio::test]
async fn memories_survive_reopening_and_stay_small() {
    let dir = TempDir::new("reopen");
    {
        let store = Embedded::open(&dir.0).unwrap();
        assert_eq!(store.load(&key("ann")).await.unwrap(), None);
        store.save(&key("ann"), &memory(3)).await.unwrap();
        store.save(&key("bob"), &memory(1000)).await.unwrap();
        store.save(&key("ann"), &memory(4)).await.unwrap();
    }
    let store = Embedded::open(&dir.0).unwrap();
    assert_eq!(store.load(&key("ann")).await.unwrap(), Some(memory(4)));
    assert_eq!(store.load(&key("bob")).await.unwrap(), Some(memory(1000)));
    // The record, not counting the database's pages: well under 32 bytes
    // per message.
    assert!(memory(1000).encode().len() < 1000 * 20);
}

#[tokio::test]
async fn a_deleted_store_file_is_noticed() {
    let dir = TempDir::new("deleted");
    let store = Embedded::open(&dir.0).unwrap();
    store.save(&key("ann"), &memory(2)).await.unwrap();
    std::fs::remove_file(dir.0.join(FILE_NAME)).unwrap();
    assert!(matches!(
        store.load(&key("ann")).await,
        Err(StateError::Lost(_))
    ));
    assert!(matches!(
        store.save(&key("ann"), &memory(2)).await,
        Err(StateError::Lost(_))
    ));
}

fn config(dir: &Path) -> PathBuf {
    let file = dir.join("popgate.yaml");
    let yaml = format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\nupstream:\n  address: \"127.0.0.1:1\"\n\
         state:\n  path: \"{}\"\n",
        dir.join("store").display()
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

/// Runs popgate with `args`, killing it if it has not ended by `deadline`.
fn run(args: &[&std::ffi::OsStr]) -> (Option<bool>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (status, text)
}

#[test]
fn a_damaged_store_stops_check_and_start_naming_the_file() {
    let dir = TempDir::new("damaged");
    let cfg = config(&dir.0);
    let (ok, text) = run(&["--config".as_ref(), cfg.as_os_str(), "--check".as_ref()]);
    assert_eq!(ok, Some(true), "{text}");
    let file = dir.0.join("store").join(FILE_NAME);
    assert!(file.exists());

    for damage in [&b"not a database at all"[..], &[0u8; 8192][..], b""] {
        std::fs::write(&file, damage).unwrap();
        if damage.is_empty() {
            // Unreadable rather than damaged.
            std::fs::remove_file(&file).unwrap();
            std::fs::create_dir(&file).unwrap();
        }
        let (ok, text) = run(&["--config".as_ref(), cfg.as_os_str(), "--check".as_ref()]);
        assert_eq!(ok, Some(false), "{text}");
        assert!(
            text.contains("state.path") && text.contains(&file.display().to_string()),
            "{text}"
        );
        let (ok, text) = run(&["--config".as_ref(), cfg.as_os_str()]);
        assert_eq!(ok, Some(false), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
    }
}

#[test]
fn another_programs_database_is_refused() {
    let dir = TempDir::new("foreign");
    let file = dir.0.join(FILE_NAME);
    let other = rusqlite::Connection::open(&file).unwrap();
    other
        .execute_batch("CREATE TABLE mailboxes (key BLOB PRIMARY KEY, memory BLOB);")
        .unwrap();
    drop(other);
    let Err(e) = Embedded::open(&dir.0) else {
        panic!("a database popgate did not create was taken as its store");
    };
    let e = e.to_string();
    assert!(
        e.contains("not a popgate store") && e.contains(FILE_NAME),
        "{e}"
    );
}

#[tokio::test]
async fn the_file_stays_the_size_of_what_it_holds() {
    let dir = TempDir::new("size");
    let store = Embedded::open(&dir.0).unwrap();
    let n = 20_000;
    for round in 0..4 {
        let mut m = memory(n);
        m.uid_validity += round;
        store.save(&key("ann"), &m).await.unwrap();
    }
    let record = memory(n).encode().len() as u64;
    let file = std::fs::metadata(dir.0.join(FILE_NAME)).unwrap().len();
    // Overwritten records give their pages back: after four saves the file
    // holds one record and a few pages of its own.
    assert!(
        file < record + 64 * 1024,
        "file {file} B for a record of {record} B"
    );
}
