//! One POP3 session (RFC 1939 section 3): AUTHORIZATION, TRANSACTION, and
//! UPDATE at QUIT, driving the upstream IMAP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, info_span, warn, Instrument};

use super::login::{self, Opened, Prefetch, Refusal, Upstream};
use super::maildrop::{uid_sets, Maildrop};
use super::upstream::{Backend, Endpoints, Imap};
use super::{Context, DEFAULT_ROUTE};
use crate::config::{ListenerTls, MasterLogin};
use crate::imap::client::BodyEvent;
use crate::imap::ClientError;
use crate::net::conn::{ClientConn, ConnError};
use crate::net::stream::Stream;
use crate::pop3::command::{self, Command, CommandError};
use crate::pop3::digest;
use crate::pop3::response::{self, RespCode};
use crate::pop3::sasl::{self, Exchange, Step};
use crate::pop3::{DotStuffer, Line, Secret, TopLimiter};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Consecutive unparsable lines tolerated before the connection is closed:
/// something that sends that many is not a POP3 client.
const MAX_BAD_COMMANDS: u32 = 20;
/// Messages up to this size are fetched ahead; for larger ones the round
/// trip saved is small beside the transfer, and an unused prefetch would
/// have to be read to the end.
const PREFETCH_MAX_SIZE: u64 = 1024 * 1024;
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

/// How the user proved who they are.
enum Proof {
    /// A password the upstream checks (USER/PASS, PLAIN, LOGIN).
    Password { authzid: String, password: Secret },
    /// A digest popgate checked against the credentials file (APOP,
    /// CRAM-MD5); the master user logs in on the user's behalf.
    Verified,
    /// A bearer token passed through (XOAUTH2, OAUTHBEARER).
    Token {
        mechanism: &'static str,
        response: Secret,
    },
}

/// A unique string for the APOP greeting and CRAM-MD5 challenges
/// (`<id.time.random@popgate>`).
fn new_timestamp(session: u64) -> String {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut nonce);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "<{session}.{nanos}.{:016x}@popgate>",
        u64::from_be_bytes(nonce)
    )
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
    bad_commands: u32,
    counts: Counts,
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
    stream: TcpStream,
    peer: SocketAddr,
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
        let open = ctx.metrics.sessions_open.with_label_values(&labels);
        open.inc();
        let cfg = &ctx.config.session;
        let local = stream.local_addr().ok();
        let mut conn =
            ClientConn::new(Stream::Plain(stream), cfg.max_line_length, cfg.idle_timeout);
        if origin.tls == ListenerTls::Implicit {
            if let Err(e) = conn
                .start_tls(
                    origin
                        .acceptor
                        .as_ref()
                        .expect("implicit TLS has a certificate"),
                )
                .await
            {
                debug!(error = %e, "TLS handshake failed");
                ctx.metrics
                    .tls_handshakes
                    .with_label_values(&[&*origin.listener, "error"])
                    .inc();
                open.dec();
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
            local: local.unwrap_or(peer),
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
            bad_commands: 0,
            counts: Counts::default(),
        };
        // RFC 1939: the APOP timestamp is in the greeting, only when APOP
        // can work.
        s.timestamp = s.ctx.credentials.is_some().then(|| new_timestamp(id));
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
        open.dec();
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
            route = DEFAULT_ROUTE,
            retrieved,
            deleted,
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            "session closed"
        );
        // Dropping the state without QUIT leaves the mailbox untouched.
        if let State::Transaction(opened) = s.state {
            tokio::spawn(opened.imap.logout().in_current_span());
        }
        s.conn.close().await;
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

    /// May passwords be sent on this connection now?
    fn auth_allowed(&self) -> bool {
        self.plaintext_ok || self.conn.is_tls()
    }

    /// The SASL mechanisms that can succeed on this connection now: never
    /// advertise one that cannot (curl picks the strongest offered).
    fn mechanisms(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.ctx.credentials.is_some() {
            out.push("CRAM-MD5"); // reveals no password, so fine without TLS
        }
        if self.auth_allowed() {
            out.extend(sasl::MECHANISMS);
            let upstream = self.ctx.default_backend();
            for m in ["XOAUTH2", "OAUTHBEARER"] {
                if upstream.offered(&format!("AUTH={m}")) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn stls_offered(&self) -> bool {
        self.origin.tls == ListenerTls::Starttls
            && !self.conn.is_tls()
            && matches!(self.state, State::Authorization { .. })
    }

    /// CAPA (RFC 2449): only what this connection, in this state, honours.
    fn capabilities(&mut self) {
        let mut caps =
            String::from("CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if self.stls_offered() {
            caps.push_str("STLS\r\n");
        }
        if matches!(self.state, State::Authorization { .. }) {
            if self.auth_allowed() {
                caps.push_str("USER\r\n");
            }
            let mechanisms = self.mechanisms();
            if !mechanisms.is_empty() {
                caps.push_str("SASL");
                for m in mechanisms {
                    caps.push(' ');
                    caps.push_str(m);
                }
                caps.push_str("\r\n");
            }
        }
        caps.push_str(concat!(
            "IMPLEMENTATION popgate-",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
        self.ok("Capability list follows");
        self.conn.out.extend_from_slice(caps.as_bytes());
        response::end_multiline(&mut self.conn.out);
    }

    /// STLS (RFC 2595). Input pipelined behind it would be read as if it
    /// had come through TLS, so it is refused instead.
    async fn stls(&mut self) -> Result<Reply, Fault> {
        if !self.stls_offered() {
            return Ok(self.err(None, "STLS is not available now."));
        }
        if self.conn.has_pending_input() {
            return Ok(self.err(
                None,
                "Commands sent after STLS before TLS; send STLS alone.",
            ));
        }
        self.ok("Begin TLS negotiation now.");
        let acceptor = self
            .origin
            .acceptor
            .clone()
            .expect("starttls listener has a certificate");
        let listener = self.origin.listener.clone();
        let result = self.conn.start_tls(&acceptor).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.ctx
            .metrics
            .tls_handshakes
            .with_label_values(&[&*listener, label])
            .inc();
        result?;
        // Nothing learnt before TLS carries over (RFC 2595 section 4).
        self.state = State::Authorization { user: None };
        Ok(Reply::Ok)
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

    async fn authorization(&mut self, cmd: Command) -> Result<Reply, Fault> {
        // APOP and CRAM-MD5 send no password, so they need no TLS.
        let needs_secret = match &cmd {
            Command::User(_) | Command::Pass(_) => true,
            Command::Auth {
                mechanism: Some(m), ..
            } => m != "CRAM-MD5",
            _ => false,
        };
        if needs_secret && !self.auth_allowed() {
            return Ok(self.err(Some(RespCode::Auth), PLAINTEXT_REFUSED));
        }
        let State::Authorization { user } = &mut self.state else {
            unreachable!()
        };
        let reply = match cmd {
            Command::User(name) => {
                *user = Some(name);
                self.ok("")
            }
            Command::Pass(password) => match user.take() {
                Some(name) => {
                    let proof = Proof::Password {
                        authzid: String::new(),
                        password,
                    };
                    self.login("USER", name, proof).await
                }
                None => self.err(None, "No user name given; send USER first."),
            },
            Command::Apop { user, digest } => self.apop(user, digest).await,
            Command::Auth {
                mechanism: None, ..
            } => {
                let mechanisms = self.mechanisms();
                self.ok("");
                for m in mechanisms {
                    self.conn.out.extend_from_slice(m.as_bytes());
                    self.conn.out.extend_from_slice(b"\r\n");
                }
                response::end_multiline(&mut self.conn.out);
                Reply::Ok
            }
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                *user = None;
                self.authenticate(&mech, initial.as_deref()).await?
            }
            _ => self.err(None, "Not logged in."),
        };
        Ok(reply)
    }

    /// Runs a SASL exchange (RFC 5034), then the upstream login.
    async fn authenticate(&mut self, mech: &str, initial: Option<&str>) -> Result<Reply, Fault> {
        if !self.mechanisms().contains(&mech) {
            return Ok(self.err(None, "Unsupported authentication mechanism."));
        }
        match mech {
            "CRAM-MD5" => return self.cram_md5(initial).await,
            "XOAUTH2" | "OAUTHBEARER" => return self.bearer(mech, initial).await,
            _ => {}
        }
        let (mut exchange, mut step) = match Exchange::start(mech, initial) {
            Ok(started) => started,
            Err(e) => return Ok(self.err(None, &format!("{e}."))),
        };
        loop {
            match step {
                Step::Done(c) => {
                    let mech = if mech == "PLAIN" { "PLAIN" } else { "LOGIN" };
                    let proof = Proof::Password {
                        authzid: c.authzid,
                        password: c.password,
                    };
                    return Ok(self.login(mech, c.user, proof).await);
                }
                Step::Challenge(challenge) => {
                    response::continuation(&mut self.conn.out, challenge);
                    let line = match self.conn.next_line().await? {
                        Line::Complete(line) => Secret(line.to_vec()),
                        Line::TooLong => return Ok(self.err(None, "Authentication data too long.")),
                    };
                    step = match exchange.step(line.expose()) {
                        Ok(s) => s,
                        Err(e) => {
                            let code = (e != sasl::SaslError::Cancelled).then_some(RespCode::Auth);
                            return Ok(self.err(code, &format!("{e}.")));
                        }
                    };
                }
            }
        }
    }

    /// Reads one SASL response line after a challenge; `None` if the
    /// exchange ended (an -ERR is already queued).
    async fn sasl_response(&mut self, challenge: &str) -> Result<Option<Secret>, Fault> {
        response::continuation(&mut self.conn.out, challenge);
        match self.conn.next_line().await? {
            Line::Complete(line) if &line[..] == b"*" => {
                self.err(None, "Authentication cancelled.");
                Ok(None)
            }
            Line::Complete(line) => Ok(Some(Secret(line.to_vec()))),
            Line::TooLong => {
                self.err(None, "Authentication data too long.");
                Ok(None)
            }
        }
    }

    /// APOP (RFC 1939 section 7), checked against the credentials file.
    async fn apop(&mut self, user: String, digest: String) -> Reply {
        let (Some(timestamp), Some(creds)) = (self.timestamp.clone(), self.ctx.credentials.clone())
        else {
            return self.err(None, "APOP is not available.");
        };
        let good = creds.secret(&user).is_some_and(|secret| {
            digest::same(&digest::apop(&timestamp, secret.expose()), &digest)
        });
        if good {
            self.login("APOP", user, Proof::Verified).await
        } else {
            self.refuse_login("APOP", &user, Instant::now()).await
        }
    }

    /// AUTH CRAM-MD5 (RFC 2195), checked against the credentials file.
    async fn cram_md5(&mut self, initial: Option<&str>) -> Result<Reply, Fault> {
        let Some(creds) = self.ctx.credentials.clone() else {
            return Ok(self.err(None, "Unsupported authentication mechanism."));
        };
        if initial.is_some() {
            return Ok(self.err(None, "CRAM-MD5 takes no initial response."));
        }
        let challenge = new_timestamp(self.id);
        let Some(line) = self.sasl_response(&B64.encode(&challenge)).await? else {
            return Ok(Reply::Err);
        };
        let decoded = B64.decode(line.expose()).ok().map(Secret);
        let answer = decoded
            .as_ref()
            .and_then(|d| std::str::from_utf8(d.expose()).ok());
        let Some((user, digest)) = answer.and_then(|a| a.rsplit_once(' ')) else {
            return Ok(self.err(Some(RespCode::Auth), "Malformed authentication data."));
        };
        let good = creds.secret(user).is_some_and(|secret| {
            digest::same(&digest::cram_md5(&challenge, secret.expose()), digest)
        });
        let user = user.to_string();
        Ok(if good {
            self.login("CRAM-MD5", user, Proof::Verified).await
        } else {
            self.refuse_login("CRAM-MD5", &user, Instant::now()).await
        })
    }

    /// XOAUTH2 and OAUTHBEARER: the client's response goes upstream as is.
    async fn bearer(&mut self, mech: &str, initial: Option<&str>) -> Result<Reply, Fault> {
        let mechanism = if mech == "XOAUTH2" {
            "XOAUTH2"
        } else {
            "OAUTHBEARER"
        };
        let response = match initial {
            Some(i) => Secret(i.as_bytes().to_vec()),
            None => match self.sasl_response("").await? {
                Some(r) => r,
                None => return Ok(Reply::Err),
            },
        };
        let decoded = B64.decode(response.expose()).ok().map(Secret);
        let Some(user) = decoded.and_then(|d| sasl::bearer_user(mechanism, d.expose())) else {
            return Ok(self.err(Some(RespCode::Auth), "Malformed authentication data."));
        };
        Ok(self
            .login(
                mechanism,
                user,
                Proof::Token {
                    mechanism,
                    response,
                },
            )
            .await)
    }

    /// Logs in upstream for `user` (the POP3 login name, routed here).
    async fn login(&mut self, mechanism: &'static str, user: String, proof: Proof) -> Reply {
        let started = Instant::now();
        let ctx = self.ctx.clone();
        let route = ctx.router.route(&user);
        let backend = &ctx.backends[route.backend];
        let as_master;
        let (owner, credentials) = match &proof {
            Proof::Password { authzid, password } => {
                let owner = if authzid.is_empty() {
                    &route.user
                } else {
                    authzid
                };
                let creds = Upstream::Password {
                    authzid,
                    user: &route.user,
                    password,
                };
                (owner.as_str(), creds)
            }
            Proof::Verified => {
                let (master, password) = ctx
                    .master
                    .as_ref()
                    .expect("credentials come with a master user");
                let auth = &ctx.config.auth;
                let creds = match auth.master_login {
                    MasterLogin::Authzid => Upstream::Password {
                        authzid: &route.user,
                        user: master,
                        password,
                    },
                    MasterLogin::Separator => {
                        as_master = format!("{}{}{master}", route.user, auth.master_separator);
                        Upstream::Password {
                            authzid: "",
                            user: &as_master,
                            password,
                        }
                    }
                };
                (route.user.as_str(), creds)
            }
            Proof::Token {
                mechanism,
                response,
            } => (
                route.user.as_str(),
                Upstream::Token {
                    mechanism,
                    response,
                },
            ),
        };
        let req = login::Request {
            owner,
            credentials,
            client: self.ends,
        };
        let outcome = login::open(&ctx, backend, &req).await;
        let result = outcome.as_ref().map_or_else(|r| r.result, |_| "ok");
        let m = &self.ctx.metrics;
        m.logins.with_label_values(&[mechanism, result]).inc();
        match outcome {
            Ok(opened) => {
                let limits = &self.ctx.limits;
                limits.ip_penalty.succeeded(&self.ends.client.ip());
                limits.user_penalty.succeeded(&user.to_lowercase());
                info!(
                    user = %user,
                    mechanism,
                    route = %backend.name,
                    messages = opened.maildrop.len(),
                    login_ms = started.elapsed().as_millis() as u64,
                    "logged in"
                );
                self.user = Some(user);
                self.state = State::Transaction(Box::new(opened));
                self.ok("Logged in.")
            }
            Err(Refusal {
                code: RespCode::Auth,
                ..
            }) => self.refuse_login(mechanism, &user, started).await,
            Err(Refusal { code, text, result }) => {
                info!(user = %user, mechanism, route = %backend.name, result, "login refused");
                self.err(Some(code), text)
            }
        }
    }

    /// A failed login answers late, the later the more failures there were
    /// recently from this address or for this user; a correct login is
    /// never held up. Unknown users get the same answer.
    async fn refuse_login(
        &mut self,
        mechanism: &'static str,
        user: &str,
        started: Instant,
    ) -> Reply {
        info!(user = %user, mechanism, result = "auth_failed", "login refused");
        let m = &self.ctx.metrics;
        if matches!(mechanism, "APOP" | "CRAM-MD5") {
            // Refused here, without asking the upstream.
            m.logins
                .with_label_values(&[mechanism, "auth_failed"])
                .inc();
        }
        let limits = &self.ctx.limits;
        let (ip, user_key, now) = (self.ends.client.ip(), user.to_lowercase(), Instant::now());
        limits.ip_penalty.failed(ip, now);
        limits.user_penalty.failed(user_key.clone(), now);
        let by_ip = limits.ip_penalty.delay(&ip, now);
        let by_user = limits.user_penalty.delay(&user_key, now);
        let kind = if by_ip >= by_user { "ip" } else { "user" };
        let delay = by_ip.max(by_user).saturating_sub(started.elapsed());
        if !delay.is_zero() {
            m.auth_throttled.with_label_values(&[kind]).inc();
            tokio::time::sleep(delay).await;
        }
        self.auth_failures += 1;
        self.err(Some(RespCode::Auth), "Authentication failed.")
    }

    async fn transaction(&mut self, cmd: Command) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            unreachable!()
        };
        let template = &self.ctx.config.uidl_format;
        let out = &mut self.conn.out;
        let result = match cmd {
            Command::Stat => {
                opened.maildrop.stat(out);
                Ok(())
            }
            Command::List(n) => opened.maildrop.list(n, out),
            Command::Uidl(n) => opened.maildrop.uidl(template, n, out),
            Command::Dele(n) => opened
                .maildrop
                .delete(n)
                .map(|()| response::ok(out, "Marked to be deleted.")),
            Command::Rset => {
                opened.maildrop.reset();
                response::ok(out, "");
                Ok(())
            }
            Command::Retr(n) => return self.send_message(n, None).await,
            Command::Top(n, lines) => return self.send_message(n, Some(lines)).await,
            _ => return Ok(self.err(None, "Already logged in.")),
        };
        Ok(match result {
            Ok(()) => Reply::Ok,
            Err(e) => self.err(None, &format!("{e}.")),
        })
    }

    /// RETR (`top` is None) or TOP: streams the message from the upstream
    /// literal through the dot-stuffer into the client socket.
    async fn send_message(&mut self, n: u32, top: Option<u64>) -> Result<Reply, Fault> {
        let State::Transaction(opened) = &mut self.state else {
            unreachable!()
        };
        let (uid, size) = match opened.maildrop.fetchable(n) {
            Ok(found) => found,
            Err(e) => return Ok(self.err(None, &format!("{e}."))),
        };
        // TOP n 0 needs no body at all.
        let section = if top == Some(0) {
            "BODY.PEEK[HEADER]"
        } else {
            "BODY.PEEK[]"
        };
        let ctx = self.ctx.clone();
        let backend = opened.backend.clone();
        let tag = match opened.prefetch.take() {
            Some(p) if p.uid == uid && p.section == section => p.tag,
            other => {
                drain(&backend, &mut opened.imap, other).await?;
                backend
                    .timed("UID FETCH body", opened.imap.fetch_body(uid, section))
                    .await?
            }
        };
        let mut stuffer = DotStuffer::default();
        let mut limiter = top.map(TopLimiter::new);
        let mut begun = false;
        loop {
            let event = match opened.imap.body_event(&tag).await {
                Ok(event) => event,
                Err(e) if e.is_refusal() && !begun => {
                    warn!(uid, error = %e, "upstream refused the body");
                    return Ok(self.err(None, "Message cannot be read now."));
                }
                Err(e) => {
                    backend.note_failure("UID FETCH body", &e);
                    return Err(e.into());
                }
            };
            match event {
                BodyEvent::Begin(_) => {
                    begun = true;
                    // Clients read in order (every one captured does), so
                    // ask for the next message now; its answer queues
                    // behind this one upstream.
                    if let Some(next) = opened.maildrop.next_to_prefetch(n, PREFETCH_MAX_SIZE) {
                        let tag = backend
                            .timed("UID FETCH body", opened.imap.fetch_body(next, section))
                            .await?;
                        opened.prefetch = Some(Prefetch {
                            uid: next,
                            section,
                            tag,
                        });
                    }
                    match top {
                        None => response::ok(&mut self.conn.out, &format!("{size} octets")),
                        Some(_) => response::ok(&mut self.conn.out, ""),
                    }
                }
                BodyEvent::Chunk(data) => {
                    let data = match &mut limiter {
                        Some(l) => &data[..l.take(&data)],
                        None => &data[..],
                    };
                    self.counts.bytes += data.len() as u64;
                    ctx.metrics.sent_bytes.inc_by(data.len() as u64);
                    stuffer.feed(data, &mut self.conn.out);
                    self.conn.flush_if_full().await?;
                }
                BodyEvent::End => break,
            }
        }
        if !begun {
            opened.maildrop.mark_gone(n);
            return Ok(self.err(
                None,
                "Message was removed from the mailbox by another client.",
            ));
        }
        stuffer.finish(&mut self.conn.out);
        let command = if top.is_none() {
            opened.maildrop.mark_retrieved(n);
            self.counts.retrieved += 1;
            "RETR"
        } else {
            "TOP"
        };
        self.ctx
            .metrics
            .messages_sent
            .with_label_values(&[command])
            .inc();
        Ok(Reply::Ok)
    }

    /// QUIT: in AUTHORIZATION just goodbye; in TRANSACTION the UPDATE state
    /// (RFC 1939 section 6). Not cancelled by shutdown once begun.
    async fn quit(&mut self) -> &'static str {
        let State::Transaction(opened) =
            std::mem::replace(&mut self.state, State::Authorization { user: None })
        else {
            self.ok("Logging out.");
            return "quit";
        };
        let Opened {
            backend,
            mut imap,
            prefetch,
            maildrop,
            user_slot,
            counted,
        } = *opened;
        let mark_seen = self.ctx.config.session.mark_seen;
        let result = match drain(&backend, &mut imap, prefetch).await {
            Ok(()) => update(&backend, &mut imap, &maildrop, mark_seen).await,
            Err(e) => Err(e),
        };
        drop(user_slot);
        let m = &self.ctx.metrics;
        let outcome = match result {
            Ok(deleted) => {
                m.messages_deleted.inc_by(deleted as u64);
                self.counts.deleted = deleted;
                if deleted > 0 {
                    self.ok("Logging out, messages deleted.");
                } else {
                    self.ok("Logging out.");
                }
                "quit"
            }
            Err(e) => {
                m.quit_failures.inc();
                warn!(error = %e, "could not remove deleted messages at QUIT");
                self.err(
                    Some(RespCode::SysTemp),
                    "Some deleted messages were not removed; try again later.",
                );
                "quit_failed"
            }
        };
        // The client need not wait for the upstream goodbye.
        let _ = self.conn.flush().await;
        imap.logout().await;
        drop(counted);
        outcome
    }
}

/// Reads and drops the answer to a prefetch the client did not use, so the
/// upstream connection is in step again.
async fn drain(
    backend: &Backend,
    imap: &mut Imap,
    prefetch: Option<Prefetch>,
) -> Result<(), ClientError> {
    let Some(p) = prefetch else {
        return Ok(());
    };
    loop {
        match imap.body_event(&p.tag).await {
            Ok(BodyEvent::End) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.is_refusal() => return Ok(()),
            Err(e) => {
                backend.note_failure("UID FETCH body", &e);
                return Err(e);
            }
        }
    }
}

/// Applies the session's marks upstream: `\Seen` on retrieved messages,
/// then removal of exactly the deleted UIDs. Returns how many were removed.
async fn update(
    backend: &Backend,
    imap: &mut Imap,
    maildrop: &Maildrop,
    mark_seen: bool,
) -> Result<usize, ClientError> {
    if mark_seen {
        for set in uid_sets(&maildrop.retrieved_uids(), MAX_SET_LEN) {
            // Not worth failing QUIT over: the mail itself is unaffected.
            if let Err(e) = backend
                .timed("UID STORE", imap.add_flag(&set, "\\Seen"))
                .await
            {
                if !e.is_refusal() {
                    return Err(e);
                }
                warn!(error = %e, "could not set \\Seen");
            }
        }
    }
    let deleted = maildrop.deleted_uids();
    if deleted.is_empty() {
        return Ok(0);
    }
    let sets = uid_sets(&deleted, MAX_SET_LEN);
    for set in &sets {
        backend
            .timed("UID STORE", imap.add_flag(set, "\\Deleted"))
            .await?;
    }
    if imap.has_capability("UIDPLUS") {
        for set in &sets {
            backend.timed("UID EXPUNGE", imap.uid_expunge(set)).await?;
        }
    } else {
        // A bare EXPUNGE would also remove what other clients flagged. Only
        // expunge when every flagged message is one of ours; otherwise leave
        // ours flagged, which hides them from POP3 until the server's own
        // expunge runs.
        let flagged = backend.timed("UID SEARCH", imap.search_deleted()).await?;
        if flagged.iter().all(|uid| deleted.binary_search(uid).is_ok()) {
            backend.timed("EXPUNGE", imap.expunge()).await?;
        } else {
            warn!(
                "upstream lacks UIDPLUS and other messages carry \\Deleted; leaving ours flagged"
            );
        }
    }
    Ok(deleted.len())
}
