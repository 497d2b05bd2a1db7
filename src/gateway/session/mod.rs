//! One POP3 session (RFC 1939 section 3): AUTHORIZATION, TRANSACTION, and
//! UPDATE at QUIT, driving the upstream IMAP connection.

mod authorization;
mod gate;
mod mechanisms;
mod transaction;
mod update;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, info_span, warn, Instrument};

use super::answer::{answer, Refusal};
use super::backend::Endpoints;
use super::login::Opened;
use super::Context;
use crate::config::ListenerTls;
use crate::imap::ClientError;
use crate::metrics::{Outcome, ThrottleKind};
use crate::net::conn::{ClientConn, ConnError};
use crate::net::stream::Stream;
use crate::pop3::command::{self, Command};
use crate::pop3::response;
use crate::pop3::Line;

/// Consecutive unparsable lines tolerated before the connection is closed:
/// something that sends that many is not a POP3 client.
const MAX_BAD_COMMANDS: u32 = 20;
/// Pending output worth sending before waiting on the upstream.
const FLUSH_BEFORE_WAIT: usize = 4096;
/// UID set length per STORE/EXPUNGE command line.
const MAX_SET_LEN: usize = 4000;

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

struct Pop3Session {
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
    /// Counts against the client's address until the login.
    waiting: Option<crate::gateway::prelogin::Waiting>,
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
    /// The client's address is known: false after a PROXY header that
    /// named none (UNKNOWN, LOCAL), when the address is the balancer's and
    /// must not pass the plaintext policy.
    pub client_known: bool,
}

/// Serves one client until it quits, drops, idles out or `force_close` fires.
pub async fn serve(
    stream: Stream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Context>,
    origin: Origin,
    mut force_close: watch::Receiver<bool>,
    waiting: Option<crate::gateway::prelogin::Waiting>,
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
                    .session_ended(labels[0], labels[1], Outcome::TlsFailed);
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
        let plaintext_ok = origin.client_known
            && ctx
                .config
                .auth
                .plaintext_networks
                .iter()
                .any(|n| n.contains(&peer.ip()));
        let mut s = Pop3Session {
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
            waiting,
            user: None,
            route: None,
            bad_commands: 0,
            counts: Counts::default(),
        };
        // RFC 1939: the APOP timestamp is in the greeting, only when APOP
        // can work: credentials, and TLS or a trusted network.
        s.timestamp = (s.ctx.credentials.is_some() && (s.plaintext_ok || s.conn.is_tls()))
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
                let outcome = Box::pin(s.quit()).await;
                let reply = if outcome == Outcome::QuitFailed {
                    Reply::Err
                } else {
                    Reply::Ok
                };
                s.count_command("QUIT", reply, started);
                outcome
            }
            End::Client(ConnError::Timeout) => {
                s.refuse(Refusal::IdleTimeout);
                Outcome::IdleTimeout
            }
            End::Client(_) => Outcome::ClientDisconnected,
            End::Upstream(e) => {
                warn!(error = %e, "upstream connection failed");
                // The client cannot be told mid-answer; closing tells it.
                Outcome::UpstreamFailure
            }
            End::TooManyErrors => {
                s.refuse(Refusal::TooManyBadCommands);
                Outcome::TooManyBadCommands
            }
            End::TooManyAuthFailures => Outcome::AuthFailures,
            End::LoginTimeout => {
                s.refuse(Refusal::LoginTimeout);
                Outcome::LoginTimeout
            }
            End::Shutdown => Outcome::Shutdown,
        };
        drop(open);
        ctx.metrics.session_ended(labels[0], labels[1], outcome);
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
            outcome = outcome.as_str(),
            "session closed"
        );
        s.conn.close().await;
        // Dropping the state without QUIT leaves the mailbox untouched.
        if let State::Transaction(opened) = s.state {
            Box::pin(opened.imap.logout()).await;
        }
    }
    .instrument(span)
    .await
}

impl Pop3Session {
    async fn run(&mut self) -> End {
        loop {
            let next = match self.login_time_left() {
                Some(left) => match tokio::time::timeout(left, self.conn.next_line()).await {
                    Ok(next) => next,
                    Err(_) => return End::LoginTimeout,
                },
                None => self.conn.next_line().await,
            };
            let line = match next {
                Ok(Line::Complete(line)) => line,
                Ok(Line::TooLong) => {
                    self.refuse(Refusal::LineTooLong);
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
                    self.refuse(Refusal::Unparsable(e));
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
            // One login deadline for every read before login, SASL
            // exchanges included, and for the login itself.
            // Boxed: the login and the fetches are large futures, and an
            // idle connection should not carry their space (measured:
            // 13.7 KB of session future per connection unboxed).
            let left = self.login_time_left();
            let dispatch = Box::pin(self.dispatch(cmd));
            let dispatched = match left {
                Some(left) => match tokio::time::timeout(left, dispatch).await {
                    Ok(dispatched) => dispatched,
                    Err(_) => return End::LoginTimeout,
                },
                None => dispatch.await,
            };
            let reply = match dispatched {
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
                self.ctx.metrics.throttled(ThrottleKind::Connection);
                return End::TooManyAuthFailures;
            }
        }
    }

    /// Before login, the time left until the login deadline.
    fn login_time_left(&self) -> Option<std::time::Duration> {
        matches!(self.state, State::Authorization { .. }).then(|| {
            let deadline = self.ctx.config.limits.login_timeout;
            deadline.saturating_sub(self.opened_at.elapsed())
        })
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

    fn refuse(&mut self, refusal: Refusal) -> Reply {
        answer(&refusal).write(&mut self.conn.out);
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
