//! The bulk import in process: a scripted old POP3 server on loopback,
//! the scripted IMAP peer as the new server, a store in a directory of
//! the test's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use popgate::config::migration::SourceLogin;
use popgate::config::{OnUnavailable, DEFAULT_ROUTE};
use popgate::gateway::import::{import, parse_users, Outcome};
use popgate::gateway::Context;
use popgate::state::embedded::Embedded;
use popgate::state::{MailboxKey, StateStore};

use super::uidls::MapStore;
use super::{body, config, Gateway, Peer, PASSWORD, USER};

/// Serves `messages` (UIDL, body) to `USER` with `PASSWORD`; any other
/// login is refused.
async fn old_server(messages: Vec<(&'static str, Vec<u8>)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let messages = messages.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"+OK old server\r\n").await.unwrap();
                let mut user = String::new();
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let cmd = line.trim_end().to_string();
                    line.clear();
                    let mut out = String::new();
                    match cmd.split_once(' ').unwrap_or((&cmd, "")) {
                        ("CAPA", _) => out.push_str("+OK\r\nUIDL\r\nTOP\r\nPIPELINING\r\n.\r\n"),
                        ("USER", u) => {
                            user = u.to_string();
                            out.push_str("+OK\r\n");
                        }
                        ("PASS", p) if user == USER && p == PASSWORD => out.push_str("+OK\r\n"),
                        ("PASS", _) => out.push_str("-ERR [AUTH] no\r\n"),
                        ("UIDL" | "LIST", _) => {
                            out.push_str("+OK\r\n");
                            for (i, (uidl, b)) in messages.iter().enumerate() {
                                let v = if cmd == "UIDL" {
                                    uidl.to_string()
                                } else {
                                    b.len().to_string()
                                };
                                out.push_str(&format!("{} {v}\r\n", i + 1));
                            }
                            out.push_str(".\r\n");
                        }
                        ("TOP", args) => {
                            let n: usize = args.split(' ').next().unwrap().parse().unwrap();
                            let text = String::from_utf8(messages[n - 1].1.clone()).unwrap();
                            let header = text.split("\r\n\r\n").next().unwrap();
                            out.push_str(&format!("+OK\r\n{header}\r\n\r\n.\r\n"));
                        }
                        ("QUIT", _) => {
                            let _ = w.write_all(b"+OK\r\n").await;
                            return;
                        }
                        _ => out.push_str("-ERR what\r\n"),
                    }
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A store in `state` and the old server on `port` to migrate from.
fn migrating(state: &std::path::Path, port: u16) -> popgate::config::Config {
    config(&format!(
        "state:\n  path: \"{}\"\nmigration:\n  pop3:\n    address: \"127.0.0.1:{port}\"\n",
        state.display()
    ))
}

fn context(peer: &Peer, state: &std::path::Path, port: u16) -> Arc<Context> {
    crate::harness::context(migrating(state, port), peer, |_| {})
}

#[tokio::test]
async fn import_stores_old_uidls_skips_known_mailboxes_and_reports_failures() {
    // The new server holds the messages under other UIDs, in another order.
    let peer = Peer::default();
    peer.add(10, body(3, 2));
    peer.add(11, body(1, 2));
    peer.add(12, body(2, 2));
    peer.add(13, body(4, 2));
    peer.add(14, body(5, 2));
    let old = vec![
        ("old-a", body(1, 2)),
        ("old-b", body(2, 2)),
        ("old-c", body(3, 2)),
    ];
    let port = old_server(old).await;
    let state = std::env::temp_dir().join(format!("popgate-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);

    let users = format!("{USER}\t{PASSWORD}\nbob\tnot-his\n");
    let users = parse_users(&users, SourceLogin::User).unwrap();
    let ctx = context(&peer, &state, port);
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = counted.clone();
    let summary = import(ctx.clone(), users.clone(), 2, move |_| {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
    assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(summary[0].user, USER);
    assert_eq!(
        summary[0].outcome,
        Outcome::Migrated {
            old_messages: 3,
            matched: 3,
            unmatched: 2
        }
    );
    match &summary[1].outcome {
        Outcome::Failed(why) => assert!(
            why.contains("PASS refused") && !why.contains("not-his"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }

    // Run again: the migrated mailbox is skipped, the failed one retried.
    let again = import(ctx.clone(), users, 2, |_| {}).await;
    assert_eq!(again[0].outcome, Outcome::Skipped);
    assert!(matches!(again[1].outcome, Outcome::Failed(_)));
    drop(ctx);

    let store = Embedded::open(&state).unwrap();
    let key = MailboxKey {
        route: DEFAULT_ROUTE.into(),
        user: USER.into(),
        folder: "INBOX".into(),
    };
    let memory = store.load(&key).await.unwrap().expect("a record").memory;
    let expected: BTreeMap<u32, String> = [(10, "old-c"), (11, "old-a"), (12, "old-b")]
        .into_iter()
        .map(|(u, s)| (u, s.to_string()))
        .collect();
    assert_eq!(memory.exceptions, expected);
    assert_eq!(memory.prints.len(), 5);
    drop(store);
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test]
async fn an_import_that_could_not_save_says_so_unless_a_record_appeared_meanwhile() {
    let peer = Peer::with_messages(2);
    let port = old_server(vec![("old-a", body(1, 2)), ("old-b", body(2, 2))]).await;
    let state = std::env::temp_dir().join(format!("popgate-import-save-{}", std::process::id()));
    let users = parse_users(&format!("{USER}\t{PASSWORD}\n"), SourceLogin::User).unwrap();
    let run = |store: Arc<MapStore>, on_unavailable| {
        let ctx = crate::harness::context(migrating(&state, port), &peer, move |ctx| {
            ctx.set_state_store(store, on_unavailable)
        });
        let users = users.clone();
        async move { import(ctx, users, 1, |_| {}).await.remove(0).outcome }
    };
    let written = Arc::new(MapStore::default());
    assert!(matches!(
        run(written.clone(), OnUnavailable::Serve).await,
        Outcome::Migrated { .. }
    ));
    let key = MailboxKey {
        route: DEFAULT_ROUTE.into(),
        user: USER.into(),
        folder: "INBOX".into(),
    };
    let record = written.load(&key).await.unwrap().unwrap().memory;

    // Another login stored the mailbox's memory while the import read the
    // old server: there is nothing left to import.
    let raced = Arc::new(MapStore::default());
    *raced.meanwhile.lock().unwrap() = Some(record);
    assert_eq!(run(raced, OnUnavailable::Serve).await, Outcome::Skipped);
    // The save failed: the import must say so, not that it skipped.
    let unwritable = Arc::new(MapStore::default());
    *unwritable.unwritable.lock().unwrap() = true;
    assert_eq!(
        run(unwritable.clone(), OnUnavailable::Serve).await,
        Outcome::Failed("the store could not save the record".into())
    );
    // Told to refuse without the store, the login's own error says why.
    assert_eq!(
        run(unwritable, OnUnavailable::Refuse).await,
        Outcome::Failed("the state store is unavailable".into())
    );
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test]
async fn a_proxy_login_gives_the_old_server_no_password() {
    // With an authorization identity the password is the authenticating
    // user's, not the mailbox owner's: the old server is not asked with
    // it, and `login: user` cannot read it (the login is refused).
    use base64::Engine;
    let peer = Peer::default();
    peer.add(10, body(1, 2));
    let port = old_server(vec![("old-a", body(1, 2))]).await;
    let state = std::env::temp_dir().join(format!("popgate-proxy-import-{}", std::process::id()));
    let (gw, mut pop) = Gateway::with(peer, migrating(&state, port)).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = b64.encode(format!("{USER}\0{USER}\0{PASSWORD}"));
    let answer = pop.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test]
async fn a_first_login_takes_the_old_servers_uidls() {
    let peer = Peer::default();
    peer.add(10, body(2, 2));
    peer.add(11, body(1, 2));
    let port = old_server(vec![("old-a", body(1, 2)), ("old-b", body(2, 2))]).await;
    let state = std::env::temp_dir().join(format!("popgate-login-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (gw, mut pop) = Gateway::with(peer, migrating(&state, port)).await;
    pop.login().await;
    assert!(pop.cmd("UIDL").await.starts_with("+OK"));
    assert_eq!(pop.multi().await, ["1 old-b", "2 old-a"]);
    pop.cmd("QUIT").await;
    drop(gw);

    // Once a mailbox is remembered the old server can be switched off:
    // logins no longer ask it, even where its failure would refuse them.
    let retired = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = retired.local_addr().unwrap().port();
    drop(retired);
    // New mail has come in: the login looks at the mailbox again.
    let peer = Peer::default();
    peer.add(10, body(2, 2));
    peer.add(11, body(1, 2));
    peer.add(12, body(3, 2));
    let (gw, mut pop) = Gateway::with(peer, migrating(&state, gone)).await;
    pop.login().await;
    assert!(pop.cmd("UIDL").await.starts_with("+OK"));
    let uidls = pop.multi().await;
    assert_eq!(uidls[..2], ["1 old-b", "2 old-a"]);
    assert_eq!(uidls.len(), 3);
    pop.cmd("QUIT").await;
    drop(gw);
    let _ = std::fs::remove_dir_all(&state);
}
