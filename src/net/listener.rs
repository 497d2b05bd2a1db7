//! Accept loops and the connection limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{error, warn};

use crate::gateway::session::{self, Origin};
use crate::gateway::Context;

/// Accepts until `stop` fires, then drops the listener so new connections
/// are refused. Each session holds a permit of `limit` while it runs.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    origin: Origin,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    force_close: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let origin = origin.clone();
                let force_close = force_close.clone();
                tokio::spawn(async move {
                    session::serve(stream, peer, ctx, origin, force_close).await;
                    drop(permit);
                });
            }
            Err(_) => {
                warn!(client = %peer, "connection limit reached");
                ctx.metrics
                    .limit_rejections
                    .with_label_values(&["connections"])
                    .inc();
                tokio::spawn(async move {
                    let msg = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n";
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.write_all(msg)).await;
                });
            }
        }
    }
}
