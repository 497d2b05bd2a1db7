//! Connections to the upstream IMAP server, with their metrics, and the
//! background check that decides readiness.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::{Context, DEFAULT_ROUTE};
use crate::http::Health;
use crate::imap::{Client, ClientError};

pub type Imap = Client<TcpStream>;

/// Keeps `popgate_upstream_connections_open` right for as long as it lives.
pub struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connects and reads the greeting. Failures are logged and counted.
pub async fn connect(ctx: &Context) -> Result<(Imap, OpenGuard), ClientError> {
    let up = &ctx.config.upstream;
    let m = &ctx.metrics;
    m.upstream_connects
        .with_label_values(&[DEFAULT_ROUTE])
        .inc();
    let stream =
        match tokio::time::timeout(up.connect_timeout, TcpStream::connect(&up.address.0)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(upstream = %up.address.0, error = %e, "cannot connect to upstream");
                failed(ctx, "connect");
                return Err(ClientError::Io(e));
            }
            Err(_) => {
                warn!(upstream = %up.address.0, "upstream connect timed out");
                failed(ctx, "connect_timeout");
                return Err(ClientError::Timeout);
            }
        };
    let _ = stream.set_nodelay(true);
    let gauge = m.upstream_open.with_label_values(&[DEFAULT_ROUTE]);
    gauge.inc();
    let guard = OpenGuard(gauge);
    let imap = timed(ctx, "greeting", Client::start(stream, up.timeout)).await?;
    Ok((imap, guard))
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
        let ok = match connect(&ctx).await {
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
                info!(upstream = %ctx.config.upstream.address.0, "upstream reachable");
            } else {
                warn!(upstream = %ctx.config.upstream.address.0, "upstream unreachable; not ready");
            }
            last = Some(ok);
        }
    }
}
