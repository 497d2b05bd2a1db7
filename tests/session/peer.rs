//! A scripted IMAP server holding a small mailbox model, so tests can check
//! what a session did upstream (flags, expunges, commands) and make the
//! server misbehave in ways a real one will not.

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";
pub const UID_VALIDITY: u32 = 42;
/// The master user that logs in for APOP and CRAM-MD5 users.
pub const MASTER: &str = "master";
pub const MASTER_PASSWORD: &str = "master-pw";
/// A second user, for per-user keys; the server has one mailbox, so both
/// users see the same messages.
pub const OTHER: &str = "bob";
pub const OTHER_PASSWORD: &str = "bobs-secret";
const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR UIDPLUS ID LITERAL+";

#[derive(Debug, Clone)]
pub struct Message {
    pub uid: u32,
    pub body: Vec<u8>,
    pub seen: bool,
    pub deleted: bool,
}

/// How the server behaves; the default is a well-behaved Dovecot-like one.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub caps: String,
    /// The whole greeting line, when not the usual OK.
    pub greeting: Option<String>,
    /// (text a command contains, tagged answer without the tag): the first
    /// command containing the text gets the answer instead of being run.
    pub refuse: Vec<(String, String)>,
    /// The connection is closed when a command containing this arrives.
    pub drop_at: Option<String>,
    /// `drop_at` closes one connection only.
    pub drop_once: bool,
    /// Close after this many bytes of a body literal were sent.
    pub drop_in_body: Option<usize>,
    /// Body fetches answer in reverse UID order.
    pub reverse_bodies: bool,
    /// Every body fetch starts with a FETCH carrying this UID's body,
    /// though it was not asked for.
    pub unsolicited_body: Option<u32>,
    /// Multi-message body fetches leave this UID out (single ones do not).
    pub omit_in_batch: Option<u32>,
    /// Bodies are announced with their UID after the literal.
    pub uid_after_body: bool,
    /// Multi-message body fetches end in `NO [EXPUNGEISSUED]`, as Dovecot
    /// answers when another session expunged some of them meanwhile.
    pub expunge_issued: bool,
    /// Multi-message body fetches carry a line no IMAP server sends before
    /// their tagged OK.
    pub junk_in_batch: bool,
    /// What `UID SEARCH UID set BEFORE day` answers, whatever it asks.
    pub search_before: Vec<u32>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            caps: CAPS.into(),
            greeting: None,
            refuse: Vec::new(),
            drop_at: None,
            drop_once: false,
            drop_in_body: None,
            reverse_bodies: false,
            unsolicited_body: None,
            omit_in_batch: None,
            uid_after_body: false,
            expunge_issued: false,
            junk_in_batch: false,
            search_before: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub messages: Vec<Message>,
    pub behaviour: Behaviour,
    /// Every command line received, tags stripped, in order.
    pub log: Vec<String>,
    pub connections: usize,
    /// Added to [`UID_VALIDITY`] in SELECT's answer (a reset mailbox).
    pub uid_validity_change: u32,
}

/// The server's shared state; each connection is served by its own task.
#[derive(Clone, Default)]
pub struct Peer(pub Arc<Mutex<State>>);

/// A message body of `n`: headers, a blank line, and `lines` body lines.
pub fn body(n: u32, lines: usize) -> Vec<u8> {
    let mut b = format!("Subject: message {n}\r\nFrom: a@example.org\r\n\r\n").into_bytes();
    for i in 0..lines {
        b.extend_from_slice(format!("line {i} of message {n}\r\n").as_bytes());
    }
    b
}

impl Peer {
    /// A mailbox with messages of UIDs 1..=n, bodies from [`body`].
    pub fn with_messages(n: u32) -> Peer {
        let peer = Peer::default();
        for uid in 1..=n {
            peer.add(uid, body(uid, 3));
        }
        peer
    }

    pub fn add(&self, uid: u32, body: Vec<u8>) {
        self.0.lock().unwrap().messages.push(Message {
            uid,
            body,
            seen: false,
            deleted: false,
        });
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.0.lock().unwrap().behaviour);
    }

    /// The next command containing `text` gets the tagged `answer`
    /// (without the tag) instead of being run.
    pub fn refuse(&self, text: &str, answer: &str) {
        self.set(|b| b.refuse.push((text.into(), answer.into())));
    }

    pub fn uids(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|m| m.uid)
            .collect()
    }

    pub fn flagged(&self, f: impl Fn(&Message) -> bool) -> Vec<u32> {
        let s = self.0.lock().unwrap();
        s.messages.iter().filter(|m| f(m)).map(|m| m.uid).collect()
    }

    pub fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().log.clone()
    }

    /// How many logged commands contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.log().iter().filter(|l| l.contains(text)).count()
    }

    pub fn connections(&self) -> usize {
        self.0.lock().unwrap().connections
    }

    /// Opens a connection: the returned end is the client's.
    pub fn open(&self) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(8 * 1024);
        self.0.lock().unwrap().connections += 1;
        tokio::spawn(serve(self.clone(), theirs));
        ours
    }
}

/// Parses `1:3,5,7:*` against the UIDs present.
fn in_set(set: &str, uid: u32, max: u32) -> bool {
    set.split(',').any(|part| {
        let num = |s: &str| {
            if s == "*" {
                max
            } else {
                s.parse().unwrap_or(0)
            }
        };
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (num(a), num(b));
                (a.min(b)..=a.max(b)).contains(&uid)
            }
            None => num(part) == uid,
        }
    })
}

fn header(body: &[u8]) -> &[u8] {
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &body[..i + 4],
        None => body,
    }
}

async fn serve(peer: Peer, stream: DuplexStream) {
    let mut s = BufReader::new(stream);
    let greeting = {
        let st = peer.0.lock().unwrap();
        let b = &st.behaviour;
        b.greeting
            .clone()
            .unwrap_or_else(|| format!("* OK [CAPABILITY {}] ready", b.caps))
    };
    if s.write_all(format!("{greeting}\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match s.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.trim_end();
        let (tag, cmd) = text.split_once(' ').unwrap_or((text, ""));
        let (tag, cmd) = (tag.to_string(), cmd.to_string());
        let Some(out) = answer(&peer, &tag, &cmd) else {
            return;
        };
        let drop_in_body = peer.0.lock().unwrap().behaviour.drop_in_body;
        match (drop_in_body, cmd.contains("BODY.PEEK")) {
            (Some(cut), true) => {
                let at = out
                    .windows(3)
                    .position(|w| w == b"}\r\n")
                    .map_or(0, |i| i + 3);
                let _ = s.write_all(&out[..(at + cut).min(out.len())]).await;
                return;
            }
            _ => {
                if s.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
        if cmd == "LOGOUT" {
            return;
        }
    }
}

/// The bytes answering one command, or None to close the connection.
fn answer(peer: &Peer, tag: &str, cmd: &str) -> Option<Vec<u8>> {
    let mut st = peer.0.lock().unwrap();
    st.log.push(cmd.to_string());
    let b = st.behaviour.clone();
    if b.drop_at.as_deref().is_some_and(|d| cmd.contains(d)) {
        if b.drop_once {
            st.behaviour.drop_at = None;
        }
        return None;
    }
    if let Some(i) = b.refuse.iter().position(|(k, _)| cmd.contains(k.as_str())) {
        let (_, ans) = st.behaviour.refuse.remove(i);
        return Some(format!("{tag} {ans}\r\n").into_bytes());
    }
    let mut out = Vec::new();
    let words: Vec<&str> = cmd.split(' ').collect();
    let max = st.messages.iter().map(|m| m.uid).max().unwrap_or(0);
    match words.as_slice() {
        ["CAPABILITY"] => put(
            &mut out,
            format!("* CAPABILITY {}\r\n{tag} OK done\r\n", b.caps),
        ),
        ["ID", ..] => put(&mut out, format!("* ID NIL\r\n{tag} OK done\r\n")),
        ["AUTHENTICATE", "PLAIN", payload] => {
            let raw = B64.decode(payload).unwrap_or_default();
            let parts: Vec<&[u8]> = raw.split(|&c| c == 0).collect();
            if parts.len() == 3
                && (parts[0].is_empty() || parts[0] == USER.as_bytes())
                && parts[1] == USER.as_bytes()
                && parts[2] == PASSWORD.as_bytes()
                || parts.len() == 3
                    && parts[0] == USER.as_bytes()
                    && parts[1] == MASTER.as_bytes()
                    && parts[2] == MASTER_PASSWORD.as_bytes()
                || parts.len() == 3
                    && parts[0].is_empty()
                    && parts[1] == format!("{USER}*{MASTER}").as_bytes()
                    && parts[2] == MASTER_PASSWORD.as_bytes()
                || parts.len() == 3
                    && parts[0].is_empty()
                    && parts[1] == OTHER.as_bytes()
                    && parts[2] == OTHER_PASSWORD.as_bytes()
            {
                put(&mut out, format!("{tag} OK [CAPABILITY {}] in\r\n", b.caps));
            } else {
                put(
                    &mut out,
                    format!("{tag} NO [AUTHENTICATIONFAILED] failed\r\n"),
                );
            }
        }
        ["SELECT", _] => put(
            &mut out,
            format!(
                "* {} EXISTS\r\n* OK [UIDVALIDITY {}] ok\r\n{tag} OK [READ-WRITE] done\r\n",
                st.messages.len(),
                UID_VALIDITY + st.uid_validity_change
            ),
        ),
        // The fingerprint fetch: the whole header stands in for the fields.
        ["UID", "FETCH", set, ..] if cmd.contains("HEADER.FIELDS") => {
            for (i, m) in st.messages.iter().enumerate() {
                if in_set(set, m.uid, max) {
                    let h = header(&m.body);
                    put(
                        &mut out,
                        format!(
                            "* {} FETCH (UID {} INTERNALDATE \"02-Dec-2026 05:11:11 +0000\" \
                             BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)] {{{}}}\r\n",
                            i + 1,
                            m.uid,
                            h.len()
                        ),
                    );
                    out.extend_from_slice(h);
                    put(&mut out, ")\r\n".into());
                }
            }
            put(&mut out, format!("{tag} OK done\r\n"));
        }
        ["UID", "FETCH", "1:*", ..] => {
            for (i, m) in st.messages.iter().enumerate() {
                let flags = match (m.seen, m.deleted) {
                    (true, true) => "\\Seen \\Deleted",
                    (true, false) => "\\Seen",
                    (false, true) => "\\Deleted",
                    (false, false) => "",
                };
                put(
                    &mut out,
                    format!(
                        "* {} FETCH (UID {} RFC822.SIZE {} FLAGS ({flags}))\r\n",
                        i + 1,
                        m.uid,
                        m.body.len()
                    ),
                );
            }
            put(&mut out, format!("{tag} OK done\r\n"));
        }
        ["UID", "FETCH", set, "(UID", section] => {
            let header_only = section.contains("HEADER");
            let name = if header_only {
                "BODY[HEADER]"
            } else {
                "BODY[]"
            };
            let mut chosen: Vec<(usize, &Message)> = st
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| in_set(set, m.uid, max))
                .collect();
            if chosen.len() > 1 {
                chosen.retain(|(_, m)| Some(m.uid) != b.omit_in_batch);
            }
            if b.reverse_bodies {
                chosen.reverse();
            }
            if let Some(extra) = b.unsolicited_body {
                if let Some((i, m)) = st.messages.iter().enumerate().find(|(_, m)| m.uid == extra) {
                    chosen.insert(0, (i, m));
                }
            }
            let several = chosen.len() > 1;
            for (i, m) in chosen {
                let data = if header_only {
                    header(&m.body)
                } else {
                    &m.body
                };
                let n = i + 1;
                if b.uid_after_body {
                    put(
                        &mut out,
                        format!("* {n} FETCH ({name} {{{}}}\r\n", data.len()),
                    );
                    out.extend_from_slice(data);
                    out.extend_from_slice(format!(" UID {})\r\n", m.uid).as_bytes());
                } else {
                    put(
                        &mut out,
                        format!("* {n} FETCH (UID {} {name} {{{}}}\r\n", m.uid, data.len()),
                    );
                    out.extend_from_slice(data);
                    out.extend_from_slice(b")\r\n");
                }
            }
            if several && b.junk_in_batch {
                put(&mut out, "* 4294967296 EXISTS\r\n".into());
            }
            let status = match several && b.expunge_issued {
                true => "NO [EXPUNGEISSUED] Some messages were also expunged",
                false => "OK done",
            };
            out.extend_from_slice(format!("{tag} {status}\r\n").as_bytes());
        }
        ["UID", "STORE", set, op, flag] => {
            let add = op.starts_with('+');
            for m in st.messages.iter_mut().filter(|m| in_set(set, m.uid, max)) {
                match *flag {
                    "(\\Seen)" => m.seen = add,
                    "(\\Deleted)" => m.deleted = add,
                    _ => {}
                }
            }
            put(&mut out, format!("{tag} OK done\r\n"));
        }
        ["UID", "EXPUNGE", set] => {
            let set = set.to_string();
            expunge(&mut st, &mut out, |m| in_set(&set, m.uid, max));
            out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        }
        ["EXPUNGE"] => {
            expunge(&mut st, &mut out, |_| true);
            out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        }
        ["UID", "SEARCH", "UID", _, "BEFORE", _] => {
            let found: Vec<String> = b.search_before.iter().map(u32::to_string).collect();
            put(
                &mut out,
                format!("* SEARCH {}\r\n{tag} OK done\r\n", found.join(" ")),
            );
        }
        ["UID", "SEARCH", "DELETED"] => {
            let mut line = String::from("* SEARCH");
            for m in st.messages.iter().filter(|m| m.deleted) {
                line.push_str(&format!(" {}", m.uid));
            }
            put(&mut out, format!("{line}\r\n{tag} OK done\r\n"));
        }
        // The copies themselves are not kept: the tests look at what stays.
        ["UID", "COPY", _, _] | ["CREATE", _] => put(&mut out, format!("{tag} OK done\r\n")),
        // RFC 6851, for a test that offers MOVE: the messages leave.
        ["UID", "MOVE", set, _] if b.caps.contains(" MOVE") => {
            let set = set.to_string();
            for m in st.messages.iter_mut().filter(|m| in_set(&set, m.uid, max)) {
                m.deleted = true;
            }
            expunge(&mut st, &mut out, |m| in_set(&set, m.uid, max));
            put(&mut out, format!("{tag} OK done\r\n"));
        }
        ["LOGOUT"] => put(&mut out, format!("* BYE bye\r\n{tag} OK done\r\n")),
        _ => put(&mut out, format!("{tag} BAD unknown command\r\n")),
    }
    Some(out)
}

fn put(out: &mut Vec<u8>, s: String) {
    out.extend_from_slice(s.as_bytes());
}

/// Removes the \Deleted messages `which` selects, announcing each.
fn expunge(st: &mut State, out: &mut Vec<u8>, which: impl Fn(&Message) -> bool) {
    let mut i = 0;
    while i < st.messages.len() {
        let m = &st.messages[i];
        if m.deleted && which(m) {
            st.messages.remove(i);
            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
        } else {
            i += 1;
        }
    }
}
