//! popgate: a POP3 gateway in front of IMAP-only mail backends.
//!
//! `pop3` and `imap` hold the two protocols without I/O, `gateway` the
//! translation between them, `net` the sockets. [`run`] serves a set of
//! already bound listeners until the shutdown future completes.

pub mod config;
pub mod gateway;
pub mod imap;
pub mod net;
pub mod pop3;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

pub use config::Config;

/// Binds every configured listener.
pub async fn bind(config: &Config) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for l in &config.listeners.0 {
        let listener = TcpListener::bind(l.address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.address))
        })?;
        out.push(listener);
    }
    Ok(out)
}

/// Serves POP3 on `listeners` until `shutdown` completes, then stops
/// accepting, lets sessions finish within the drain time, and closes the rest
/// without applying their deletions.
pub async fn run(
    config: Config,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let drain = config.shutdown.drain_timeout;
    let max = config.session.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    let ctx = Arc::new(gateway::Context::new(config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (force_tx, force_rx) = watch::channel(false);

    let mut loops = Vec::new();
    for listener in listeners {
        info!("listening on {}", listener.local_addr()?);
        loops.push(tokio::spawn(net::listener::accept_loop(
            listener,
            ctx.clone(),
            limit.clone(),
            stop_rx.clone(),
            force_rx.clone(),
        )));
    }

    shutdown.await;
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
    info!("stopped");
    Ok(())
}
