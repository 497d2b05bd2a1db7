//! Connections to the upstream IMAP server, with their metrics, and the
//! background check that decides readiness.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{info, warn};

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use std::sync::Mutex;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{self, UpstreamTls};
use crate::imap::{Client, ClientError};
use crate::metrics::{FailureReason, LimitKind, Metrics};
use crate::net::stream::Stream;
use crate::net::tls;

pub(crate) type Imap = Client<Stream>;

/// Holds an upstream connection's place: keeps
/// `popgate_upstream_connections_open` right and the backend's connection
/// limit counted for as long as it lives.
pub(crate) struct OpenGuard {
    gauge: prometheus::IntGauge,
    _permit: Option<OwnedSemaphorePermit>,
}

impl OpenGuard {
    /// Counts the connection on `gauge` instead (in use, or pooled).
    pub(crate) fn count_on(&mut self, gauge: prometheus::IntGauge) {
        gauge.inc();
        std::mem::replace(&mut self.gauge, gauge).dec();
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// How a backend reaches its server: TCP to the configured address, or an
/// in-memory pipe opened by a function (in-process tests' scripted peers).
#[derive(Clone)]
pub enum Connector {
    Tcp,
    Memory(Arc<dyn Fn() -> tokio::io::DuplexStream + Send + Sync>),
}

/// One IMAP backend, prepared once at start: address, TLS, connection
/// limit, and the metrics labelled with its route name.
pub struct Backend {
    pub(crate) name: String,
    pub(crate) config: config::Upstream,
    tls_connector: Option<(TlsConnector, ServerName<'static>)>,
    limit: Option<Arc<Semaphore>>,
    connector: Connector,
    metrics: Arc<Metrics>,
    /// Capabilities announced before login, as the health check last saw
    /// them; decides which SASL mechanisms can be passed through.
    greeting_caps: Mutex<Vec<String>>,
    /// Connections opened ahead of logins, once `pool::fill` runs for it.
    pub(crate) pool: Option<super::pool::Pool>,
}

impl Backend {
    /// `key` is the config key, for error messages.
    pub(crate) fn new(
        name: &str,
        key: &str,
        config: &config::Upstream,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Backend>, String> {
        Backend::with_connector(name, key, config, metrics, Connector::Tcp)
    }

    /// A backend reached through `connector` instead of TCP.
    pub fn with_connector(
        name: &str,
        key: &str,
        config: &config::Upstream,
        metrics: Arc<Metrics>,
        connector: Connector,
    ) -> Result<Arc<Backend>, String> {
        let tls_connector = match config.tls {
            UpstreamTls::None => None,
            UpstreamTls::Starttls | UpstreamTls::Implicit => {
                if config.dangerous_skip_verify {
                    warn!(
                        upstream = %config.address.0,
                        "{key}.dangerous_skip_verify is on: the upstream certificate is NOT verified; \
                         passwords can be read by anyone on the path"
                    );
                }
                let tls =
                    tls::client_config(config.ca_file.as_deref(), config.dangerous_skip_verify)
                        .map_err(|e| format!("{key}.ca_file: {e}"))?;
                let name = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| config.address.host().to_string());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| format!("{key}.server_name: {name:?} is not a valid name"))?;
                Some((TlsConnector::from(tls), name))
            }
        };
        Ok(Arc::new(Backend {
            name: name.to_string(),
            config: config.clone(),
            tls_connector,
            limit: (config.max_connections > 0)
                .then(|| Arc::new(Semaphore::new(config.max_connections))),
            pool: (config.pool > 0).then(|| {
                super::pool::Pool::new(
                    config.pool,
                    config.pool_max_age,
                    metrics.upstream_pooled.with_label_values(&[name]),
                    metrics.upstream_open.with_label_values(&[name]),
                )
            }),
            connector,
            metrics,
            greeting_caps: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn address(&self) -> &str {
        &self.config.address.0
    }

    /// Whether the backend offered `cap` before login at the last check.
    pub(crate) fn offered(&self, cap: &str) -> bool {
        let caps = self.greeting_caps.lock().unwrap_or_else(|p| p.into_inner());
        caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    async fn handshake(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let Some((connector, name)) = self.tls_connector.as_ref() else {
            return Err(std::io::Error::other("no TLS configured for this upstream"));
        };
        Ok(Stream::Client(Box::new(
            connector.connect(name.clone(), tcp).await?,
        )))
    }
}

/// The two ends of a client's connection, as forwarded with IMAP ID.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoints {
    /// The client (from the PROXY header when there is one).
    pub(crate) client: SocketAddr,
    /// Our address the client connected to.
    pub(crate) local: SocketAddr,
}

impl Backend {
    /// Connects, reads the greeting, and with TLS configured secures the
    /// link (implicit or STARTTLS); then tells the upstream who the client
    /// is. Failures are logged and counted.
    pub(crate) async fn connect(
        &self,
        client: Option<Endpoints>,
    ) -> Result<(Imap, OpenGuard), ClientError> {
        self.connect_with(client, false)
            .await
            .map(|(imap, guard, _)| (imap, guard))
    }

    /// As [`Backend::connect`]; with `pooled` a login's connection may come
    /// from the pool, and the flag returned says whether it did.
    pub(crate) async fn connect_with(
        &self,
        client: Option<Endpoints>,
        pooled: bool,
    ) -> Result<(Imap, OpenGuard, bool), ClientError> {
        let ready = match (&self.pool, client) {
            (Some(pool), Some(_)) if pooled => pool.take(),
            _ => None,
        };
        let from_pool = ready.is_some();
        let (mut imap, guard) = match ready {
            Some(ready) => ready,
            None => self.open().await?,
        };
        if client.is_none() {
            // Only the health check keeps what is advertised up to date;
            // logins need not copy it each time.
            *self.greeting_caps.lock().unwrap_or_else(|p| p.into_inner()) =
                imap.capabilities().to_vec();
        }
        let up = &self.config;
        if let Some(ends) = client.filter(|_| up.forward_client_ip && imap.has_capability("ID")) {
            let fields = [
                ("x-originating-ip", ends.client.ip().to_string()),
                ("x-originating-port", ends.client.port().to_string()),
                ("x-connected-ip", ends.local.ip().to_string()),
                ("x-connected-port", ends.local.port().to_string()),
            ];
            // Not waited for: a refusal arrives among the login's answers,
            // which pass over it (the fields are only informative).
            self.timed("ID", imap.id(&fields)).await?;
        }
        Ok((imap, guard, from_pool))
    }

    /// Connects, secures and greets: an upstream connection ready for a
    /// login, not yet told whose.
    pub(crate) async fn open(&self) -> Result<(Imap, OpenGuard), ClientError> {
        let up = &self.config;
        let permit = match &self.limit {
            None => None,
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    warn!(upstream = %self.address(), "upstream connection limit reached");
                    self.metrics.limit_rejected(LimitKind::UpstreamConnections);
                    return Err(ClientError::Protocol(
                        "upstream connection limit reached".into(),
                    ));
                }
            },
        };
        self.metrics
            .upstream_connects
            .with_label_values(&[&self.name])
            .inc();
        let plain = match &self.connector {
            Connector::Memory(open) => Stream::Memory(open()),
            Connector::Tcp => {
                let connecting = TcpStream::connect(self.address());
                let tcp = match tokio::time::timeout(up.connect_timeout, connecting).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        warn!(upstream = %self.address(), error = %e, "cannot connect to upstream");
                        self.failed(FailureReason::Connect);
                        return Err(ClientError::Io(e));
                    }
                    Err(_) => {
                        warn!(upstream = %self.address(), "upstream connect timed out");
                        self.failed(FailureReason::ConnectTimeout);
                        return Err(ClientError::Timeout);
                    }
                };
                let _ = tcp.set_nodelay(true);
                Stream::Plain(tcp)
            }
        };
        let gauge = self.metrics.upstream_open.with_label_values(&[&self.name]);
        gauge.inc();
        let guard = OpenGuard {
            gauge,
            _permit: permit,
        };
        let stream = match up.tls {
            UpstreamTls::Implicit => self.tls_handshake(plain).await?,
            _ => plain,
        };
        let mut imap = self
            .timed("greeting", Client::start(stream, up.timeout))
            .await?;
        if up.tls == UpstreamTls::Starttls {
            self.timed("STARTTLS", imap.starttls())
                .await
                .inspect_err(|e| {
                    if e.is_refusal() {
                        self.failed(FailureReason::Tls);
                    }
                })?;
            let plain = std::mem::replace(imap.stream_mut(), Stream::Upgrading);
            *imap.stream_mut() = self.tls_handshake(plain).await?;
            self.timed("CAPABILITY", imap.refresh_capabilities())
                .await?;
        }
        Ok((imap, guard))
    }

    async fn tls_handshake(&self, mut plain: Stream) -> Result<Stream, ClientError> {
        let Some(tcp) = plain.take_plain() else {
            self.failed(FailureReason::Tls);
            return Err(ClientError::Protocol("TLS needs a TCP connection".into()));
        };
        match tokio::time::timeout(self.config.timeout, self.handshake(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                warn!(upstream = %self.address(), error = %e, "upstream TLS handshake failed");
                self.failed(FailureReason::Tls);
                Err(ClientError::Io(e))
            }
            Err(_) => {
                self.failed(FailureReason::Timeout);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Runs one upstream command, recording its latency and any failure
    /// that is not a plain refusal (NO/BAD).
    pub(crate) async fn timed<T>(
        &self,
        command: &'static str,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let result = fut.await;
        self.metrics
            .upstream_command_seconds
            .with_label_values(&[&self.name, command])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.note_failure(command, e);
        }
        result
    }

    /// Logs and counts an upstream failure; plain refusals (NO/BAD) are the
    /// caller's business.
    pub(crate) fn note_failure(&self, command: &'static str, e: &ClientError) {
        if !e.is_refusal() {
            warn!(route = %self.name, command, error = %e, "upstream failed");
            self.failed(reason(e));
        }
    }

    fn failed(&self, reason: FailureReason) {
        self.metrics.upstream_failed(&self.name, reason);
    }
}

/// The failure label of an error that is not a refusal.
fn reason(e: &ClientError) -> FailureReason {
    match e {
        ClientError::Io(_) => FailureReason::Io,
        ClientError::Timeout => FailureReason::Timeout,
        ClientError::Closed => FailureReason::Closed,
        ClientError::Protocol(_) | ClientError::Refused { .. } => FailureReason::Protocol,
    }
}

/// Connects every `health_check_interval` and keeps `popgate_upstream_up`
/// current, telling `report` each result (the default backend's decide
/// readiness). Logs only changes.
pub(crate) async fn health_loop(backend: Arc<Backend>, report: impl Fn(bool)) {
    let up_gauge = backend
        .metrics
        .upstream_up
        .with_label_values(&[&backend.name]);
    let mut ticker = tokio::time::interval(backend.config.health_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        ticker.tick().await;
        let ok = match backend.connect(None).await {
            Ok((imap, _guard)) => {
                imap.logout().await;
                true
            }
            Err(_) => false,
        };
        report(ok);
        up_gauge.set(i64::from(ok));
        if last != Some(ok) {
            if ok {
                info!(route = %backend.name, upstream = %backend.address(), "upstream reachable");
            } else {
                warn!(route = %backend.name, upstream = %backend.address(), "upstream unreachable");
            }
            last = Some(ok);
        }
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
pub(crate) mod tests;
