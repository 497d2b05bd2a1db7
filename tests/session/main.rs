//! In-process session tests: a whole POP3 session over an in-memory pipe,
//! against the scripted IMAP server of [`peer`]. No sockets, no Dovecot.

mod authorization;
mod delete_action;
mod faults;
mod folders;
mod gate;
mod harness;
mod migration;
mod peer;
mod retrieval;
#[path = "../../src/test_logs.rs"]
mod test_logs;
mod transaction;
mod uidls;
mod update;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use popgate::config::Config;
use popgate::gateway::Context;

pub use peer::{body, Peer, MASTER, MASTER_PASSWORD, OTHER, OTHER_PASSWORD, PASSWORD, USER};
pub use test_logs::Logs;

const SECRETS_DIR_PREFIX: &str = "popgate-session-";

/// The directory of a test's secret files, removed when dropped.
pub struct SecretsDir(std::path::PathBuf);

impl Drop for SecretsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config with APOP and CRAM-MD5 enabled: `alice` has `secret` in the
/// credentials file, and the master user logs in for her. The files are
/// private to their owner, as popgate requires; keep the returned guard
/// until the session's context has read them.
pub fn config_with_credentials(name: &str) -> (Config, SecretsDir) {
    let dir =
        std::env::temp_dir().join(format!("{SECRETS_DIR_PREFIX}{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let creds = dir.join("credentials");
    write_private(&creds, &format!("{USER}:{PASSWORD}\n"));
    let master = dir.join("master");
    write_private(&master, &format!("{MASTER_PASSWORD}\n"));
    let config = config(&format!(
        "auth:\n  credentials_file: {}\n  master_user: {MASTER}\n  master_password_file: {}\n",
        creds.display(),
        master.display()
    ));
    (config, SecretsDir(dir))
}

fn write_private(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("secret file");
    f.write_all(text.as_bytes()).expect("secret file");
}

/// Bound on any single wait, so a broken session fails the test instead of
/// hanging it. Not a performance figure.
const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `done` holds, failing the test after [`DEADLINE`].
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The config every test starts from; `extra` adds YAML at the top level.
pub fn config(extra: &str) -> Config {
    config_limits("", extra)
}

/// Like [`config`], with `limits` lines (indented) added to `limits:`.
pub fn config_limits(limits: &str, extra: &str) -> Config {
    let text = format!(
        "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"imap.test:143\"\n\
         limits:\n  auth_penalty_max: 0s\n{limits}{extra}"
    );
    Config::parse(&text).expect("test config")
}

/// A running session: the POP3 client's end and what the server did.
pub struct Gateway {
    pub ctx: Arc<Context>,
    /// The greeting line the session sent.
    pub greeting: String,
    pub peer: Peer,
    force: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct Pop {
    r: BufReader<ReadHalf<DuplexStream>>,
    w: WriteHalf<DuplexStream>,
}

impl Gateway {
    pub async fn new(peer: Peer) -> (Gateway, Pop) {
        Gateway::with(peer, config("")).await
    }

    /// Starts a session with `config`; the greeting is read and checked.
    pub async fn with(peer: Peer, config: Config) -> (Gateway, Pop) {
        Gateway::adjusted(peer, config, |_| {}).await
    }

    /// Like [`Gateway::with`], with the context changed by `adjust` first.
    pub async fn adjusted(
        peer: Peer,
        config: Config,
        adjust: impl FnOnce(&mut Context),
    ) -> (Gateway, Pop) {
        let ctx = harness::context(config, &peer, adjust);
        let (mut gw, mut pop) = Gateway::connect(ctx, peer);
        let greeting = pop.line().await;
        assert!(greeting.starts_with("+OK POP3 gateway ready"), "{greeting}");
        gw.greeting = greeting;
        (gw, pop)
    }

    /// Another session on the same server (for per-user limits).
    pub async fn another(&self) -> (Gateway, Pop) {
        let (gw, mut pop) = Gateway::connect(self.ctx.clone(), self.peer.clone());
        pop.line().await;
        (gw, pop)
    }

    fn connect(ctx: Arc<Context>, peer: Peer) -> (Gateway, Pop) {
        let (client, force, task) = harness::session(ctx.clone());
        let (r, w) = tokio::io::split(client);
        let pop = Pop {
            r: BufReader::new(r),
            w,
        };
        let gw = Gateway {
            ctx,
            greeting: String::new(),
            peer,
            force,
            task,
        };
        (gw, pop)
    }

    /// Closes the session as a drain that ran out of time does.
    pub fn force_close(&self) {
        let _ = self.force.send(true);
    }

    /// Waits for the session task to end; true if it ended without panic.
    pub async fn finished(self) -> bool {
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("session did not end")
            .is_ok()
    }

    /// How many sessions ended with `outcome`.
    pub fn outcomes(&self, outcome: &str) -> u64 {
        self.ctx
            .metrics
            .sessions
            .with_label_values(&["test", "none", outcome])
            .get()
    }

    pub fn commands(&self, name: &str, result: &str) -> u64 {
        self.ctx
            .metrics
            .commands
            .with_label_values(&[name, result])
            .get()
    }
}

impl Pop {
    pub async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("send");
    }

    /// Sends raw bytes (several commands at once, or no CRLF).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("send");
    }

    /// The next line without its CRLF; empty at end of stream.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(DEADLINE, self.r.read_until(b'\n', &mut buf))
            .await
            .expect("no answer in time")
            .expect("read");
        let s = String::from_utf8_lossy(&buf).to_string();
        s.strip_suffix("\r\n").unwrap_or(&s).to_string()
    }

    /// Sends a command and reads its status line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// The lines of a multi-line answer after its status line, unstuffed,
    /// up to the terminating dot.
    pub async fn multi(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            if l == "." {
                return lines;
            }
            assert!(!l.is_empty() || lines.len() < 100_000, "stream ended");
            lines.push(l.strip_prefix('.').map(str::to_string).unwrap_or(l));
        }
    }

    /// A RETR/TOP body as bytes (CRLF line ends), after its status line.
    pub async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in self.multi().await {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// True once the server closed the connection (reads end).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        tokio::time::timeout(
            DEADLINE,
            tokio::io::AsyncReadExt::read_to_end(&mut self.r, &mut rest),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false)
    }

    /// Logs in as the peer's user.
    pub async fn login(&mut self) {
        assert_eq!(self.cmd(&format!("USER {USER}")).await, "+OK");
        assert_eq!(
            self.cmd(&format!("PASS {PASSWORD}")).await,
            "+OK Logged in."
        );
    }

    /// Closes the client's side.
    pub async fn hang_up(mut self) {
        let _ = self.w.shutdown().await;
    }
}
