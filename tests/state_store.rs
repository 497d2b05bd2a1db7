//! The embedded UIDL store: what it keeps survives reopening, a damaged
//! file stops `--check` and start-up with an error naming it, and a file
//! deleted while open is noticed rather than written to in vain. A mailbox
//! can be forgotten; `popgate uidl show` and `forget` find the key a login
//! writes, and refuse a store another process holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use popgate::state::embedded::{Embedded, FILE_NAME};
use popgate::state::{MailboxKey, Memory, Print, Saved, StateError, StateStore};

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

/// Writes whatever is stored: a compare-and-set against what is there.
async fn put(store: &Embedded, key: &MailboxKey, memory: &Memory) -> Result<(), StateError> {
    let current = store.load(key).await?;
    assert_eq!(
        store.save(key, memory, current.as_ref()).await?,
        Saved::Done
    );
    Ok(())
}

async fn get(store: &Embedded, key: &MailboxKey) -> Result<Option<Memory>, StateError> {
    Ok(store.load(key).await?.map(|s| s.memory))
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
        assert_eq!(get(&store, &key("ann")).await.unwrap(), None);
        put(&store, &key("ann"), &memory(3)).await.unwrap();
        put(&store, &key("bob"), &memory(1000)).await.unwrap();
        put(&store, &key("ann"), &memory(4)).await.unwrap();
    }
    let store = Embedded::open(&dir.0).unwrap();
    assert_eq!(get(&store, &key("ann")).await.unwrap(), Some(memory(4)));
    assert_eq!(get(&store, &key("bob")).await.unwrap(), Some(memory(1000)));
    // The record, not counting the database's pages: well under 32 bytes
    // per message.
    assert!(memory(1000).encode().len() < 1000 * 20);
}

#[tokio::test]
async fn a_deleted_store_file_is_noticed() {
    let dir = TempDir::new("deleted");
    let store = Embedded::open(&dir.0).unwrap();
    put(&store, &key("ann"), &memory(2)).await.unwrap();
    std::fs::remove_file(dir.0.join(FILE_NAME)).unwrap();
    assert!(matches!(
        get(&store, &key("ann")).await,
        Err(StateError::Lost(_))
    ));
    assert!(matches!(
        store.save(&key("ann"), &memory(2), None).await,
        Err(StateError::Lost(_))
    ));
}

#[tokio::test]
async fn a_save_from_a_stale_read_is_refused() {
    let dir = TempDir::new("cas");
    // Two handles on one file: two processes (a gateway and `popgate uidl
    // import`) or two logins.
    let (one, two) = (
        Embedded::open(&dir.0).unwrap(),
        Embedded::open(&dir.0).unwrap(),
    );
    assert_eq!(
        one.save(&key("ann"), &memory(2), None).await.unwrap(),
        Saved::Done
    );
    assert_eq!(
        two.save(&key("ann"), &memory(5), None).await.unwrap(),
        Saved::Conflict,
        "a record appeared since `two` read none"
    );
    let read = two.load(&key("ann")).await.unwrap().unwrap();
    put(&one, &key("ann"), &memory(3)).await.unwrap();
    assert_eq!(
        two.save(&key("ann"), &memory(5), Some(&read))
            .await
            .unwrap(),
        Saved::Conflict,
        "the record changed since `two` read it"
    );
    assert_eq!(get(&two, &key("ann")).await.unwrap(), Some(memory(3)));
    let read = two.load(&key("ann")).await.unwrap();
    assert_eq!(
        two.save(&key("ann"), &memory(5), read.as_ref())
            .await
            .unwrap(),
        Saved::Done
    );
    assert_eq!(get(&one, &key("ann")).await.unwrap(), Some(memory(5)));
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

/// Runs popgate with `args`, killing it if it has not ended by `deadline`:
/// its exit status (None if killed) and output.
fn run_code<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
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

/// Whether popgate with `args` succeeded (None: killed) and its output.
fn run(args: &[&std::ffi::OsStr]) -> (Option<bool>, String) {
    let (code, text) = run_code(args);
    (code.map(|c| c == 0), text)
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
        put(&store, &key("ann"), &m).await.unwrap();
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

#[tokio::test]
async fn forgetting_drops_one_mailbox_only_and_lasts() {
    let dir = TempDir::new("forget");
    {
        let store = Embedded::open(&dir.0).unwrap();
        // Nothing there, not even the table yet.
        assert!(!store.forget(&key("ann")).await.unwrap());
        put(&store, &key("ann"), &memory(3)).await.unwrap();
        put(&store, &key("bob"), &memory(2)).await.unwrap();
        let other_folder = MailboxKey {
            folder: "Archive".into(),
            ..key("ann")
        };
        put(&store, &other_folder, &memory(1)).await.unwrap();
        assert!(store.forget(&key("ann")).await.unwrap());
        assert!(!store.forget(&key("ann")).await.unwrap());
        assert_eq!(get(&store, &key("ann")).await.unwrap(), None);
        assert_eq!(get(&store, &other_folder).await.unwrap(), Some(memory(1)));
        // A later login stores afresh.
        put(&store, &key("ann"), &memory(1)).await.unwrap();
        assert!(store.forget(&key("ann")).await.unwrap());
    }
    let store = Embedded::open(&dir.0).unwrap();
    assert_eq!(get(&store, &key("ann")).await.unwrap(), None);
    assert_eq!(get(&store, &key("bob")).await.unwrap(), Some(memory(2)));
}

#[tokio::test]
async fn the_commands_work_beside_a_running_gateway() {
    let dir = TempDir::new("beside");
    let cfg = config(&dir.0);
    let cfg = cfg.to_str().unwrap();
    // The gateway's handle stays open throughout.
    let gateway = Embedded::open(&dir.0.join("store")).unwrap();
    put(&gateway, &key("ann"), &memory(3)).await.unwrap();
    let (code, text) = run_code(&["--config", cfg, "--check"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run_code(&["uidl", "show", "--config", cfg, "--user", "ann"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("exceptions: 1"), "{text}");
    let (code, text) = run_code(&["uidl", "forget", "--config", cfg, "--user", "ann"]);
    assert_eq!(code, Some(0), "{text}");
    // The gateway sees the forgetting at once, and goes on writing.
    assert_eq!(get(&gateway, &key("ann")).await.unwrap(), None);
    put(&gateway, &key("ann"), &memory(2)).await.unwrap();
    let (code, text) = run_code(&["uidl", "show", "--config", cfg, "--user", "ann"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("messages: 2"), "{text}");
}

#[tokio::test]
async fn show_and_forget_read_the_key_a_login_writes() {
    let dir = TempDir::new("show");
    let cfg = config(&dir.0);
    let args = |command: &'static str, user: &'static str, more: &[&'static str]| {
        let mut a = vec![
            "uidl",
            command,
            "--config",
            cfg.to_str().unwrap(),
            "--user",
            user,
        ];
        a.extend_from_slice(more);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run_args = |a: Vec<String>| run_code(&a);
    // No store file yet: nothing remembered, and looking creates none.
    let (code, text) = run_args(args("show", "ann", &[]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nothing remembered"), "{text}");
    assert!(!dir.0.join("store").join(FILE_NAME).exists());

    {
        let store = Embedded::open(&dir.0.join("store")).unwrap();
        put(&store, &key("ann"), &memory(3)).await.unwrap();
    }
    // Logins store the user in lower case; the folder is the config's.
    let (code, text) = run_args(args("show", "ANN", &[]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("uidvalidity: 1234\n"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("UID "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    // The default template, %08Xu%08Xv, under UIDVALIDITY 1234 (0x4d2).
    assert_eq!(rows[0][3..], ["00000001000004d2", "template"], "{text}");
    assert_eq!(rows[1][3..], ["0000000a000004d1", "exception"], "{text}");
    assert_eq!(
        rows[1][..3],
        ["2", "2002", "2023-11-14T22:13:22Z"],
        "{text}"
    );

    for (more, status, says) in [
        (&["--folder", "Archive"][..], 1, "nothing remembered"),
        (&["--route", "east"][..], 2, "no such route"),
    ] {
        let (code, text) = run_args(args("show", "ann", more));
        assert_eq!(code, Some(status), "{text}");
        assert!(text.contains(says), "{text}");
    }
    let (code, text) = run_args(args("forget", "ann", &[]));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("forgot") && text.contains("exceptions: 1"),
        "{text}"
    );
    let (code, text) = run_args(args("show", "ann", &[]));
    assert_eq!(code, Some(1), "{text}");
    let (code, text) = run_args(args("forget", "ann", &[]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to forget"), "{text}");
}

#[tokio::test]
async fn a_damaged_record_is_named_and_can_be_forgotten() {
    let dir = TempDir::new("damaged-record");
    let cfg = config(&dir.0);
    let cfg = cfg.to_str().unwrap();
    {
        let store = Embedded::open(&dir.0.join("store")).unwrap();
        put(&store, &key("bob"), &memory(2)).await.unwrap();
    }
    {
        // A record no version of popgate wrote, under ann's key.
        let db = rusqlite::Connection::open(dir.0.join("store").join(FILE_NAME)).unwrap();
        db.execute(
            "INSERT INTO mailboxes (key, memory) VALUES (?1, ?2)",
            (key("ann").encoded().as_bytes(), &b"\x07garbage"[..]),
        )
        .unwrap();
    }
    let (code, text) = run_code(&["--config", cfg, "--check"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(r#"route "default", user "ann", folder "INBOX" is corrupt"#)
            && text.contains("popgate uidl forget"),
        "{text}"
    );
    let show = |user| run_code(&["uidl", "show", "--config", cfg, "--user", user]);
    let (code, text) = show("bob");
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = show("ann");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("user ann, folder INBOX") && text.contains("corrupt"),
        "{text}"
    );
    let (code, text) = run_code(&["uidl", "forget", "--config", cfg, "--user", "ann"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("forgot") && text.contains("unreadable"),
        "{text}"
    );
    let (code, text) = run_code(&["--config", cfg, "--check"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(show("bob").0, Some(0));
}
