//! popgate: a POP3 gateway in front of IMAP-only mail backends.
//!
//! `pop3` and `imap` hold the two protocols without I/O, `gateway` the
//! translation between them, `net` the sockets, `metrics` and `http` what
//! operators see. [`run`] serves already bound listeners until the shutdown
//! future completes.

pub mod config;
pub mod files;
pub mod gateway;
pub(crate) mod http;
pub mod imap;
pub(crate) mod listener;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod oauth;
pub mod pop3;
pub mod secret;
pub mod state;
#[cfg(test)]
mod test_logs;
#[cfg(test)]
mod test_support;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

pub use config::Config;
use gateway::session::Origin;

/// The context new sessions get: replaced by a config reload, while each
/// running session keeps the one it started with.
#[derive(Clone)]
pub(crate) struct Current(Arc<RwLock<Arc<gateway::Context>>>);

impl Current {
    pub(crate) fn get(&self) -> Arc<gateway::Context> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, ctx: Arc<gateway::Context>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = ctx;
    }
}

/// How SIGHUP reloads the config: the file, and how the log level changes.
pub struct Reload {
    pub path: PathBuf,
    /// Applies `log.level`; None when `RUST_LOG` decides instead.
    pub log_level: Option<LevelSetter>,
}

/// Sets the log filter to a `log.level` value.
pub type LevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The sockets popgate serves: POP3 listeners in config order, and the
/// HTTP sidecar's if one is configured.
pub struct Sockets {
    pub pop3: Vec<TcpListener>,
    pub http: Option<TcpListener>,
}

/// Binds every configured socket.
pub async fn bind(config: &Config) -> std::io::Result<Sockets> {
    async fn one(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
    }
    let mut pop3 = Vec::new();
    for l in &config.listeners.0 {
        pop3.push(one(l.address).await?);
    }
    let http = match &config.metrics {
        Some(m) => Some(one(m.address).await?),
        None => None,
    };
    Ok(Sockets { pop3, http })
}

/// What a server needs beyond the config: the shared context and the TLS
/// certificate, loaded and checked.
pub struct Prepared {
    ctx: Arc<gateway::Context>,
    certificates: Option<Arc<net::tls::CertStore>>,
}

/// Loads everything the config refers to; `--check` runs this too, so a
/// missing certificate or CA file is found before deployment.
pub fn prepare(config: Config) -> Result<Prepared, String> {
    let certificates = match &config.tls {
        Some(files) => Some(
            net::tls::CertStore::load(&files.certificate, &files.key)
                .map_err(|e| format!("tls: {e}"))?,
        ),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let ctx = Arc::new(gateway::Context::new(config, metrics)?);
    Ok(Prepared { ctx, certificates })
}

/// Serves until `shutdown` completes, then stops accepting, lets sessions
/// finish within the drain time, and closes the rest without applying their
/// deletions.
pub async fn run(
    config: Config,
    listeners: Sockets,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve(config, listeners, shutdown, None).await
}

/// As [`run`], and with `reload`, SIGHUP reads the config again.
pub async fn serve(
    config: Config,
    listeners: Sockets,
    shutdown: impl Future<Output = ()>,
    reload: Option<Reload>,
) -> std::io::Result<()> {
    let Prepared { ctx, certificates } = prepare(config).map_err(std::io::Error::other)?;
    let current = Current(Arc::new(RwLock::new(ctx.clone())));
    listener::log_panics();
    let metrics = ctx.metrics.clone();
    let drain = ctx.config.shutdown.drain_timeout;
    let max = ctx.config.session.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    metrics.connection_limit.set(max as i64);
    let health = Arc::new(http::Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);

    let mut background = Vec::new();
    let checks = HealthChecks::start(&ctx, &health);
    match reload {
        Some(reload) => {
            // Installed before listening: SIGHUP's default would end us.
            use tokio::signal::unix::{signal, SignalKind};
            let hangup = signal(SignalKind::hangup())?;
            background.push(tokio::spawn(reload_on_hangup(
                current.clone(),
                reload,
                hangup,
                checks,
                health.clone(),
            )))
        }
        None => background.push(tokio::spawn(async move {
            // Held until the end: dropping them stops the checks.
            let _checks = checks;
            std::future::pending::<()>().await
        })),
    }
    if let (Some(listener), Some(settings)) = (listeners.http, &ctx.config.metrics) {
        info!(
            "metrics and health checks on http://{}",
            listener.local_addr()?
        );
        let settings = http::Settings {
            header_read_timeout: settings.header_read_timeout,
            max_connections: settings.max_connections,
            max_connections_per_ip: settings.max_connections_per_ip,
        };
        background.push(tokio::spawn(http::serve(
            listener,
            metrics.clone(),
            health.clone(),
            settings,
        )));
    }

    if let Some(creds) = &ctx.credentials {
        let interval = ctx.config.auth.reload_interval;
        background.push(tokio::spawn(files::watch(
            creds.clone(),
            "credentials",
            interval,
            metrics.clone(),
        )));
    }
    background.push(tokio::spawn(gateway::sweep_limits(ctx.clone())));
    if !ctx.brokers.is_empty() {
        let brokers = ctx.brokers.values().cloned().collect();
        background.push(tokio::spawn(oauth::watch(brokers, metrics.clone())));
    }
    background.push(tokio::spawn(gateway::watch_store(
        ctx.clone(),
        health.clone(),
    )));
    let acceptor = certificates.map(|store| {
        let interval = ctx
            .config
            .tls
            .as_ref()
            .map(|t| t.reload_interval)
            .unwrap_or_default();
        background.push(tokio::spawn(files::watch(
            store.clone(),
            "certificate",
            interval,
            metrics.clone(),
        )));
        tokio_rustls::TlsAcceptor::from(store.server_config())
    });
    let mut loops = Vec::new();
    let mut labels = Vec::new();
    for (listener, cfg) in listeners.pop3.into_iter().zip(&ctx.config.listeners.0) {
        let bound = listener.local_addr()?;
        info!("listening on {bound}");
        // Label by the bound port, so port 0 in tests still names the socket.
        let label = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("pop3-{}", bound.port()));
        labels.push((label.clone(), cfg.tls.label()));
        let origin = Origin {
            listener: label.into(),
            tls: cfg.tls,
            acceptor: acceptor
                .clone()
                .filter(|_| cfg.tls != config::ListenerTls::None),
            proxy_trusted: if cfg.proxy_protocol {
                cfg.proxy_trusted.clone().into()
            } else {
                Arc::from([])
            },
            client_known: true,
        };
        loops.push(tokio::spawn(listener::accept_loop(
            listener,
            current.clone(),
            origin,
            limit.clone(),
            stop_rx.clone(),
            force_rx.clone(),
        )));
    }
    let routes: Vec<String> = ctx.backends.keys().cloned().collect();
    metrics.init_labels(&labels, &routes);
    health.listening.store(true, Ordering::Relaxed);

    shutdown.await;
    health.draining.store(true, Ordering::Relaxed);
    ctx.metrics.draining.set(1);
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let open = max - limit.available_permits();
    info!(
        open_sessions = open,
        "no longer accepting; draining for up to {drain:?}"
    );
    let all_done = limit.acquire_many(max as u32);
    if tokio::time::timeout(drain, all_done).await.is_err() {
        let open = max - limit.available_permits();
        warn!(
            open_sessions = open,
            "drain time over; closing sessions without applying their deletions"
        );
        let _ = force_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), limit.acquire_many(max as u32)).await;
    }
    for task in background {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

/// The upstream health checks of one context: every backend is checked,
/// the default one decides readiness. Dropping them stops them.
struct HealthChecks(Vec<tokio::task::JoinHandle<()>>);

impl HealthChecks {
    fn start(ctx: &gateway::Context, health: &Arc<http::Health>) -> HealthChecks {
        HealthChecks(
            ctx.backends
                .values()
                .map(|b| {
                    let ready = (b.name == gateway::DEFAULT_ROUTE).then(|| health.clone());
                    let report = move |ok| {
                        if let Some(h) = &ready {
                            h.upstream_ok.store(ok, Ordering::Relaxed);
                        }
                    };
                    tokio::spawn(gateway::backend::health_loop(b.clone(), report))
                })
                // The pools' fillers go with the backends they fill.
                .chain(
                    ctx.backends
                        .values()
                        .map(|b| tokio::spawn(gateway::pool::fill(b.clone()))),
                )
                .collect(),
        )
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Reads the config again on each SIGHUP. A file that fails to load or
/// check, or that changes what only a restart can apply, leaves the
/// running config in force; either way the outcome is logged and counted
/// in `popgate_reloads_total{kind="config"}`.
async fn reload_on_hangup(
    current: Current,
    reload: Reload,
    mut hangup: tokio::signal::unix::Signal,
    mut checks: HealthChecks,
    health: Arc<http::Health>,
) {
    let path = reload.path.display().to_string();
    while hangup.recv().await.is_some() {
        let old = current.get();
        let loaded = Config::load(&reload.path)
            .map_err(|e| e.to_string())
            .and_then(
                |new| match gateway::reload::restart_needed(&old.config, &new) {
                    Some(key) => Err(format!(
                        "{path}: {key} changed, which needs a restart; nothing was applied"
                    )),
                    None => old.reloaded(new).map(Arc::new),
                },
            );
        let result = match loaded {
            Ok(ctx) => {
                if let Some(set_level) = &reload.log_level {
                    if let Err(e) = set_level(&ctx.config.log.level) {
                        warn!(error = %e, "log.level not applied");
                    }
                }
                for w in ctx.config.warnings() {
                    warn!("{w}");
                }
                checks = HealthChecks::start(&ctx, &health);
                current.set(ctx);
                info!("config reloaded from {path}; new sessions use it");
                "ok"
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config");
                "error"
            }
        };
        old.metrics
            .reloads
            .with_label_values(&["config", result])
            .inc();
    }
    drop(checks);
}
