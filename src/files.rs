//! Files popgate reads besides its config: certificates, CA files,
//! credentials. One error type for them, and the watcher that re-reads
//! them on a timer, since Kubernetes swaps Secret files through symlinks
//! and inotify misses such swaps on some volumes.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files: `None` if they did not change, else whether the
    /// new content is now in service (`Ok` with a summary for the log).
    fn reload(&self) -> Option<Result<String, String>>;
}

/// Calls `reload` every `interval` for as long as the task lives; a failed
/// reload keeps what was loaded before. `kind` labels the log and
/// `popgate_reloads_total`.
pub async fn watch<R: Reload>(
    item: Arc<R>,
    kind: &'static str,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let it = item.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || it.reload()).await else {
            continue;
        };
        match outcome {
            None => {}
            Some(Ok(summary)) => {
                info!(kind, "{kind} reloaded: {summary}");
                metrics.reloads.with_label_values(&[kind, "ok"]).inc();
            }
            Some(Err(e)) => {
                error!(kind, error = %e, "{kind} reload failed; keeping the previous one");
                metrics.reloads.with_label_values(&[kind, "error"]).inc();
            }
        }
    }
}
