//! Connections to the upstream IMAP server, with their metrics, and the
//! background check that decides readiness.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{info, warn};

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::{Context, DEFAULT_ROUTE};
use crate::config::{self, UpstreamTls};
use crate::http::Health;
use crate::imap::{Client, ClientError};
use crate::net::stream::Stream;
use crate::net::tls;

pub type Imap = Client<Stream>;

/// Keeps `popgate_upstream_connections_open` right for as long as it lives.
pub struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How to reach the upstream, prepared once at start.
pub struct Backend {
    pub address: String,
    pub tls: UpstreamTls,
    tls_connector: Option<(TlsConnector, ServerName<'static>)>,
}

impl Backend {
    pub fn new(config: &config::Upstream) -> Result<Backend, String> {
        let tls_connector = match config.tls {
            UpstreamTls::None => None,
            UpstreamTls::Starttls | UpstreamTls::Implicit => {
                if config.dangerous_skip_verify {
                    warn!(
                        upstream = %config.address.0,
                        "upstream.dangerous_skip_verify is on: the upstream certificate is NOT verified; \
                         passwords can be read by anyone on the path"
                    );
                }
                let tls =
                    tls::client_config(config.ca_file.as_deref(), config.dangerous_skip_verify)
                        .map_err(|e| format!("upstream.ca_file: {e}"))?;
                let name = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| config.address.host().to_string());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("upstream.server_name: {name:?} is not a valid name"))?;
                Some((TlsConnector::from(tls), name))
            }
        };
        Ok(Backend {
            address: config.address.0.clone(),
            tls: config.tls,
            tls_connector,
        })
    }

    async fn handshake(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let (connector, name) = self.tls_connector.as_ref().expect("TLS configured");
        Ok(Stream::Client(Box::new(
            connector.connect(name.clone(), tcp).await?,
        )))
    }
}

/// The two ends of a client's connection, as forwarded with IMAP ID.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// The client (from the PROXY header when there is one).
    pub client: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
}

/// Connects, reads the greeting, and with TLS configured secures the link
/// (implicit or STARTTLS); then tells the upstream who the client is.
/// Failures are logged and counted.
pub async fn connect(
    ctx: &Context,
    client: Option<Endpoints>,
) -> Result<(Imap, OpenGuard), ClientError> {
    let up = &ctx.config.upstream;
    let backend = &ctx.backend;
    let m = &ctx.metrics;
    m.upstream_connects
        .with_label_values(&[DEFAULT_ROUTE])
        .inc();
    let tcp = match tokio::time::timeout(up.connect_timeout, TcpStream::connect(&backend.address))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(upstream = %backend.address, error = %e, "cannot connect to upstream");
            failed(ctx, "connect");
            return Err(ClientError::Io(e));
        }
        Err(_) => {
            warn!(upstream = %backend.address, "upstream connect timed out");
            failed(ctx, "connect_timeout");
            return Err(ClientError::Timeout);
        }
    };
    let _ = tcp.set_nodelay(true);
    let gauge = m.upstream_open.with_label_values(&[DEFAULT_ROUTE]);
    gauge.inc();
    let guard = OpenGuard(gauge);
    let stream = match backend.tls {
        UpstreamTls::Implicit => tls_handshake(ctx, backend, tcp).await?,
        _ => Stream::Plain(tcp),
    };
    let mut imap = timed(ctx, "greeting", Client::start(stream, up.timeout)).await?;
    if backend.tls == UpstreamTls::Starttls {
        timed(ctx, "STARTTLS", imap.starttls())
            .await
            .inspect_err(|e| {
                if e.is_refusal() {
                    failed(ctx, "tls");
                }
            })?;
        let tcp = imap
            .stream_mut()
            .take_plain()
            .expect("plain before STARTTLS");
        *imap.stream_mut() = tls_handshake(ctx, backend, tcp).await?;
        timed(ctx, "CAPABILITY", imap.refresh_capabilities()).await?;
    }
    if let Some(ends) = client.filter(|_| up.forward_client_ip && imap.has_capability("ID")) {
        let fields = [
            ("x-originating-ip", ends.client.ip().to_string()),
            ("x-originating-port", ends.client.port().to_string()),
            ("x-connected-ip", ends.local.ip().to_string()),
            ("x-connected-port", ends.local.port().to_string()),
        ];
        // Only informative: a server that refuses ID still serves the login.
        if let Err(e) = timed(ctx, "ID", imap.id(&fields)).await {
            if !e.is_refusal() {
                return Err(e);
            }
        }
    }
    Ok((imap, guard))
}

async fn tls_handshake(
    ctx: &Context,
    backend: &Backend,
    tcp: TcpStream,
) -> Result<Stream, ClientError> {
    let timeout = ctx.config.upstream.timeout;
    match tokio::time::timeout(timeout, backend.handshake(tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            warn!(upstream = %backend.address, error = %e, "upstream TLS handshake failed");
            failed(ctx, "tls");
            Err(ClientError::Io(e))
        }
        Err(_) => {
            failed(ctx, "timeout");
            Err(ClientError::Timeout)
        }
    }
}

/// Runs one upstream command, recording its latency and any failure that is
/// not a plain refusal (NO/BAD).
pub async fn timed<T>(
    ctx: &Context,
    command: &'static str,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let started = Instant::now();
    let result = fut.await;
    ctx.metrics
        .upstream_command_seconds
        .with_label_values(&[DEFAULT_ROUTE, command])
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        note_failure(ctx, command, e);
    }
    result
}

/// Logs and counts an upstream failure; plain refusals (NO/BAD) are the
/// caller's business.
pub fn note_failure(ctx: &Context, command: &'static str, e: &ClientError) {
    if !e.is_refusal() {
        warn!(command, error = %e, "upstream failed");
        failed(ctx, reason(e));
    }
}

pub fn failed(ctx: &Context, reason: &'static str) {
    ctx.metrics
        .upstream_failures
        .with_label_values(&[DEFAULT_ROUTE, reason])
        .inc();
}

fn reason(e: &ClientError) -> &'static str {
    match e {
        ClientError::Io(_) => "io",
        ClientError::Timeout => "timeout",
        ClientError::Closed => "closed",
        ClientError::Protocol(_) => "protocol",
        ClientError::Refused { .. } => "refused",
    }
}

/// Connects every `health_check_interval` and keeps `health.upstream_ok`
/// and `popgate_upstream_up` current. Logs only changes.
pub async fn health_loop(ctx: Arc<Context>, health: Arc<Health>) {
    let up_gauge = ctx.metrics.upstream_up.with_label_values(&[DEFAULT_ROUTE]);
    let mut ticker = tokio::time::interval(ctx.config.upstream.health_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        ticker.tick().await;
        let ok = match connect(&ctx, None).await {
            Ok((imap, _guard)) => {
                imap.logout().await;
                true
            }
            Err(_) => false,
        };
        health.upstream_ok.store(ok, Ordering::Relaxed);
        up_gauge.set(i64::from(ok));
        if last != Some(ok) {
            if ok {
                info!(upstream = %ctx.backend.address, "upstream reachable");
            } else {
                warn!(upstream = %ctx.backend.address, "upstream unreachable; not ready");
            }
            last = Some(ok);
        }
    }
}
