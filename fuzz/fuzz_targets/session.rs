//! A whole POP3 session, in process, against the scripted IMAP server of the
//! session tests: the fuzzer picks the mailbox, the server's misbehaviour and
//! the client's commands. Never a panic, never a session that outlives its
//! client, and no message removed or flagged `\Deleted` unless the client
//! sent both DELE and QUIT.
#![no_main]

#[path = "../../tests/session/peer.rs"]
#[allow(dead_code)]
mod peer;

#[path = "../../tests/session/harness.rs"]
mod harness;

use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use peer::{Peer, PASSWORD, USER};
use popgate::config::Config;

const MAX_MESSAGES: usize = 8;
const MAX_BODY: usize = 4096;
const MAX_FAULTS: usize = 4;
const MAX_COMMANDS: usize = 32;

#[derive(Arbitrary, Debug)]
struct Case {
    /// (UID gap from the previous message, body).
    messages: Vec<(u8, Vec<u8>)>,
    faults: Vec<Fault>,
    commands: Vec<Command>,
    /// Whether the client closes its side after its last command.
    hang_up: bool,
}

/// An IMAP command as the scripted server recognises it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verb {
    Login,
    Select,
    Snapshot,
    Body,
    Store,
    Expunge,
    Logout,
}

impl Verb {
    fn text(self) -> &'static str {
        match self {
            Verb::Login => "AUTHENTICATE",
            Verb::Select => "SELECT",
            Verb::Snapshot => "1:*",
            Verb::Body => "BODY.PEEK",
            Verb::Store => "STORE",
            Verb::Expunge => "EXPUNGE",
            Verb::Logout => "LOGOUT",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Fault {
    Greeting(String),
    Caps(String),
    /// The command gets this tagged answer instead of being run.
    Answer(Verb, String),
    DropAt(Verb),
    DropInBody(u16),
    ReverseBodies,
    UnsolicitedBody(u8),
    OmitInBatch(u8),
    UidAfterBody,
    UidValidityChange(u8),
}

#[derive(Arbitrary, Debug)]
enum Command {
    User,
    Pass(bool),
    AuthPlain(bool),
    Stat,
    List(Option<u8>),
    Uidl(Option<u8>),
    Retr(u8),
    Top(u8, u8),
    Dele(u8),
    Rset,
    Noop,
    Capa,
    Quit,
    Raw(Vec<u8>),
}

impl Command {
    fn bytes(&self) -> Vec<u8> {
        use base64::Engine;
        let arg = |n: &Option<u8>| n.map(|n| format!(" {n}")).unwrap_or_default();
        let line = match self {
            Command::User => format!("USER {USER}"),
            Command::Pass(true) => format!("PASS {PASSWORD}"),
            Command::Pass(false) => "PASS wrong".into(),
            Command::AuthPlain(good) => {
                let pw = if *good { PASSWORD } else { "wrong" };
                let raw = format!("\0{USER}\0{pw}");
                format!(
                    "AUTH PLAIN {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
            Command::Stat => "STAT".into(),
            Command::List(n) => format!("LIST{}", arg(n)),
            Command::Uidl(n) => format!("UIDL{}", arg(n)),
            Command::Retr(n) => format!("RETR {n}"),
            Command::Top(n, k) => format!("TOP {n} {k}"),
            Command::Dele(n) => format!("DELE {n}"),
            Command::Rset => "RSET".into(),
            Command::Noop => "NOOP".into(),
            Command::Capa => "CAPA".into(),
            Command::Quit => "QUIT".into(),
            Command::Raw(bytes) => {
                let mut b = bytes.clone();
                b.extend_from_slice(b"\r\n");
                return b;
            }
        };
        format!("{line}\r\n").into_bytes()
    }
}

fn mailbox(case: &Case) -> Peer {
    let peer = Peer::default();
    let mut uid = 0u32;
    for (gap, body) in case.messages.iter().take(MAX_MESSAGES) {
        uid += u32::from(*gap) + 1;
        peer.add(uid, body[..body.len().min(MAX_BODY)].to_vec());
    }
    for fault in case.faults.iter().take(MAX_FAULTS) {
        match fault {
            Fault::Greeting(g) => peer.set(|b| b.greeting = Some(one_line(g))),
            Fault::Caps(c) => peer.set(|b| b.caps = one_line(c)),
            Fault::Answer(v, a) => peer.set(|b| b.refuse.push((v.text().into(), one_line(a)))),
            Fault::DropAt(v) => peer.set(|b| b.drop_at = Some(v.text().into())),
            Fault::DropInBody(n) => peer.set(|b| b.drop_in_body = Some(usize::from(*n))),
            Fault::ReverseBodies => peer.set(|b| b.reverse_bodies = true),
            Fault::UnsolicitedBody(u) => peer.set(|b| b.unsolicited_body = Some(u32::from(*u))),
            Fault::OmitInBatch(u) => peer.set(|b| b.omit_in_batch = Some(u32::from(*u))),
            Fault::UidAfterBody => peer.set(|b| b.uid_after_body = true),
            Fault::UidValidityChange(n) => peer.0.lock().unwrap().uid_validity_change = (*n).into(),
        }
    }
    peer
}

/// The scripted server writes these as lines, so a line break inside would
/// make two.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

async fn run(case: Case) {
    let peer = mailbox(&case);
    let before = peer.uids();
    let mut script = Vec::new();
    for c in case.commands.iter().take(MAX_COMMANDS) {
        script.extend_from_slice(&c.bytes());
    }

    let config = Config::parse(
        "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"imap.test:143\"\n\
         limits:\n  auth_penalty_max: 0s\n",
    )
    .expect("config");
    let ctx = harness::context(config, &peer, |_| {});
    let (client, _force, session) = harness::session(ctx);

    let (mut r, mut w) = tokio::io::split(client);
    let hang_up = case.hang_up;
    let sent = script.clone();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&sent).await;
        if hang_up {
            let _ = w.shutdown().await;
        } else {
            // Keeps the client's side open: the session must end on QUIT or
            // on its own timeouts.
            std::future::pending::<()>().await;
        }
    });
    let mut out = Vec::new();
    // The clock is paused, so this is virtual time: a session that waits
    // longer than any of its timeouts has hung.
    let read = tokio::time::timeout(Duration::from_secs(24 * 3600), r.read_to_end(&mut out));
    assert!(
        read.await.is_ok(),
        "the session never closed the connection"
    );
    let ended = tokio::time::timeout(Duration::from_secs(3600), session).await;
    assert!(ended.is_ok(), "the session task outlived its connection");
    writer.abort();

    let lower = script.to_ascii_lowercase();
    let said = |w: &[u8]| lower.windows(w.len()).any(|x| x == w);
    if !(said(b"dele") && said(b"quit")) {
        assert_eq!(
            peer.uids(),
            before,
            "a message was removed without DELE and QUIT"
        );
        assert!(
            peer.flagged(|m| m.deleted).is_empty(),
            "a message was flagged \\Deleted without DELE and QUIT"
        );
    }
}

fuzz_target!(|case: Case| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run(case));
});
