//! One POP3 session (RFC 1939 section 3): AUTHORIZATION, TRANSACTION, and
//! UPDATE at QUIT, driving the upstream IMAP connection.

mod authorization;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, info_span, warn, Instrument};

use super::login::{self, Opened, Refusal, Upstream};
use super::upstream::Endpoints;
use super::Context;
use crate::config::{ListenerTls, MasterLogin};
use crate::imap::ClientError;
use crate::net::conn::{ClientConn, ConnError};
use crate::net::stream::Stream;
use crate::pop3::command::{self, Command, CommandError};
use crate::pop3::digest;
use crate::pop3::response::{self, RespCode};
use crate::pop3::sasl::{self, Exchange, Step};
use crate::pop3::{Line, Secret};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Consecutive unparsable lines tolerated before the connection is closed:
/// something that sends that many is not a POP3 client.
const MAX_BAD_COMMANDS: u32 = 20;
/// Pending output worth sending before waiting on the upstream.
const FLUSH_BEFORE_WAIT: usize = 4096;
/// UID set length per STORE/EXPUNGE command line.
const MAX_SET_LEN: usize = 4000;

const PLAINTEXT_REFUSED: &str =
    "Plaintext authentication disallowed on non-secure connections; use STLS or POP3S (port 995).";

enum State {
    Authorization { user: Option<String> },
    Transaction(Box<Opened>),
}

/// Why the command loop stopped.
enum End {
    Quit,
    Client(ConnError),
    Upstream(ClientError),
    TooManyErrors,
    TooManyAuthFailures,
    LoginTimeout,
    Shutdown,
}

/// How a command was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ok,
    Err,
    Quit,
}

/// A failure that ends the session.
enum Fault {
    Client(ConnError),
    Upstream(ClientError),
}

impl From<ConnError> for Fault {
    fn from(e: ConnError) -> Self {
        Fault::Client(e)
    }
}

impl From<ClientError> for Fault {
    fn from(e: ClientError) -> Self {
        Fault::Upstream(e)
    }
}

#[derive(Default)]
struct Counts {
    retrieved: u64,
    bytes: u64,
    deleted: usize,
}

struct Session {
    ctx: Arc<Context>,
    conn: ClientConn<Stream>,
    origin: Origin,
    /// The client's address may log in without TLS.
    plaintext_ok: bool,
    ends: Endpoints,
    auth_failures: u32,
    opened_at: Instant,
    id: u64,
    /// The APOP timestamp of the greeting.
    timestamp: Option<String>,
    state: State,
    user: Option<String>,
    /// The backend's route name, once logged in.
    route: Option<String>,
    bad_commands: u32,
    counts: Counts,
}

/// Holds `popgate_sessions_open` up for as long as it lives.
struct OpenGauge(prometheus::IntGauge);

impl OpenGauge {
    fn up(gauge: prometheus::IntGauge) -> OpenGauge {
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which listener a session came from, for metrics.
#[derive(Clone)]
pub struct Origin {
    pub listener: Arc<str>,
    pub tls: ListenerTls,
    /// Present on `starttls` and `implicit` listeners.
    pub acceptor: Option<TlsAcceptor>,
    /// Load balancers whose PROXY headers are honoured; empty when the
    /// listener does not speak the PROXY protocol.
    pub proxy_trusted: Arc<[ipnet::IpNet]>,
}

/// Serves one client until it quits, drops, idles out or `force_close` fires.
pub async fn serve(
    stream: Stream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Context>,
    origin: Origin,
    mut force_close: watch::Receiver<bool>,
) {
    let id = ctx.session_id();
    let span = info_span!("session", id, client = %peer);
    async move {
        let started = Instant::now();
        info!("session opened");
        let labels = [&*origin.listener, origin.tls.label()];
        // Counted down on every way out, a panic included.
        let open = OpenGauge::up(ctx.metrics.sessions_open.with_label_values(&labels));
        let cfg = &ctx.config.session;
        let mut conn = ClientConn::new(stream, cfg.max_line_length, cfg.idle_timeout);
        if origin.tls == ListenerTls::Implicit {
            let handshake = match origin.acceptor.as_ref() {
                Some(acceptor) => conn.start_tls(acceptor).await,
                None => Err(ConnError::Io(std::io::Error::other("no certificate"))),
            };
            if let Err(e) = handshake {
                debug!(error = %e, "TLS handshake failed");
                ctx.metrics
                    .tls_handshakes
                    .with_label_values(&[&*origin.listener, "error"])
                    .inc();
                drop(open);
                ctx.metrics
                    .sessions
                    .with_label_values(&[labels[0], labels[1], "tls_failed"])
                    .inc();
                return;
            }
            ctx.metrics
                .tls_handshakes
                .with_label_values(&[&*origin.listener, "ok"])
                .inc();
        }
        let ends = Endpoints {
            client: peer,
            local,
        };
        let plaintext_ok = ctx
            .config
            .auth
            .plaintext_networks
            .iter()
            .any(|n| n.contains(&peer.ip()));
        let mut s = Session {
            ctx: ctx.clone(),
            conn,
            origin: origin.clone(),
            plaintext_ok,
            ends,
            auth_failures: 0,
            opened_at: started,
            id,
            timestamp: None,
            state: State::Authorization { user: None },
            user: None,
            route: None,
            bad_commands: 0,
            counts: Counts::default(),
        };
        // RFC 1939: the APOP timestamp is in the greeting, only when APOP
        // can work.
        s.timestamp = s
            .ctx
            .credentials
            .is_some()
            .then(|| authorization::new_timestamp(id));
        let greeting = match &s.timestamp {
            Some(ts) => format!("POP3 gateway ready. {ts}"),
            None => "POP3 gateway ready.".to_string(),
        };
        response::ok(&mut s.conn.out, &greeting);
        let end = tokio::select! {
            end = s.run() => end,
            _ = force_close.wait_for(|f| *f) => End::Shutdown,
        };
        let outcome = match end {
            End::Quit => {
                let started = Instant::now();
                let outcome = s.quit().await;
                let reply = if outcome == "quit_failed" {
                    Reply::Err
                } else {
                    Reply::Ok
                };
                s.count_command("QUIT", reply, started);
                outcome
            }
            End::Client(ConnError::Timeout) => {
                response::err(&mut s.conn.out, None, "Autologout; idle for too long.");
                "idle_timeout"
            }
            End::Client(_) => "client_disconnected",
            End::Upstream(e) => {
                warn!(error = %e, "upstream connection failed");
                // The client cannot be told mid-answer; closing tells it.
                "upstream_failure"
            }
            End::TooManyErrors => {
                response::err(&mut s.conn.out, None, "Too many bad commands, closing.");
                "too_many_bad_commands"
            }
            End::TooManyAuthFailures => "auth_failures",
            End::LoginTimeout => {
                response::err(
                    &mut s.conn.out,
                    None,
                    "No login within the time allowed, closing.",
                );
                "login_timeout"
            }
            End::Shutdown => "shutdown",
        };
        drop(open);
        ctx.metrics
            .sessions
            .with_label_values(&[labels[0], labels[1], outcome])
            .inc();
        let Counts {
            retrieved,
            bytes,
            deleted,
        } = s.counts;
        info!(
            user = s.user.as_deref().unwrap_or("-"),
            route = s.route.as_deref().unwrap_or("-"),
            retrieved,
            deleted,
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            "session closed"
        );
        s.conn.close().await;
        // Dropping the state without QUIT leaves the mailbox untouched.
        if let State::Transaction(opened) = s.state {
            opened.imap.logout().await;
        }
    }
    .instrument(span)
    .await
}

impl Session {
    async fn run(&mut self) -> End {
        loop {
            let next = if matches!(self.state, State::Authorization { .. }) {
                let left = self
                    .ctx
                    .config
                    .limits
                    .login_timeout
                    .saturating_sub(self.opened_at.elapsed());
                match tokio::time::timeout(left, self.conn.next_line()).await {
                    Ok(next) => next,
                    Err(_) => return End::LoginTimeout,
                }
            } else {
                self.conn.next_line().await
            };
            let line = match next {
                Ok(Line::Complete(line)) => line,
                Ok(Line::TooLong) => {
                    response::err(&mut self.conn.out, None, "Line too long.");
                    if self.bad_command() {
                        return End::TooManyErrors;
                    }
                    continue;
                }
                Err(e) => return End::Client(e),
            };
            let cmd = match command::parse(&line) {
                Ok(cmd) => cmd,
                Err(e) => {
                    let text = match e {
                        CommandError::Unknown => "Unknown command.".to_string(),
                        e => format!("{e}."),
                    };
                    response::err(&mut self.conn.out, None, &text);
                    if self.bad_command() {
                        return End::TooManyErrors;
                    }
                    continue;
                }
            };
            self.bad_commands = 0;
            let name = cmd.name();
            debug!(command = name, "command");
            let started = Instant::now();
            let reply = match self.dispatch(cmd).await {
                Ok(reply) => reply,
                Err(Fault::Client(e)) => return End::Client(e),
                Err(Fault::Upstream(e)) => return End::Upstream(e),
            };
            if reply == Reply::Quit {
                // Counted when the UPDATE it starts has finished.
                return End::Quit;
            }
            self.count_command(name, reply, started);
            if self.auth_failures >= self.ctx.config.limits.auth_failures_per_connection {
                self.ctx
                    .metrics
                    .auth_throttled
                    .with_label_values(&["connection"])
                    .inc();
                return End::TooManyAuthFailures;
            }
        }
    }

    fn count_command(&self, name: &'static str, reply: Reply, started: Instant) {
        let m = &self.ctx.metrics;
        let result = if reply == Reply::Err { "err" } else { "ok" };
        m.commands.with_label_values(&[name, result]).inc();
        m.command_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts an unparsable line; true when there have been too many.
    fn bad_command(&mut self) -> bool {
        self.ctx
            .metrics
            .commands
            .with_label_values(&["unparsable", "err"])
            .inc();
        self.bad_commands += 1;
        self.bad_commands >= MAX_BAD_COMMANDS
    }

    fn ok(&mut self, text: &str) -> Reply {
        response::ok(&mut self.conn.out, text);
        Reply::Ok
    }

    fn err(&mut self, code: Option<RespCode>, text: &str) -> Reply {
        response::err(&mut self.conn.out, code, text);
        Reply::Err
    }

    /// Runs one command and says how it was answered.
    async fn dispatch(&mut self, cmd: Command) -> Result<Reply, Fault> {
        match cmd {
            Command::Quit => Ok(Reply::Quit),
            Command::Capa => {
                self.capabilities();
                Ok(Reply::Ok)
            }
            Command::Stls => self.stls().await,
            Command::Noop => Ok(self.ok("")),
            _ => match &mut self.state {
                State::Authorization { .. } => self.authorization(cmd).await,
                State::Transaction(_) => self.transaction(cmd).await,
            },
        }
    }
}

#[cfg(test)]
mod tests;
