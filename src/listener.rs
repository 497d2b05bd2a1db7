//! Accept loops: the PROXY protocol, the connection limits, and handing each
//! connection to a session.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, info, warn};

use crate::gateway::answer::{answer, Refusal};
use crate::gateway::session::{self, Origin};
use crate::gateway::Context;
use crate::metrics::{LimitKind, Metrics};
use crate::net::proxy;
use crate::net::stream::Stream;
use crate::Current;

/// Time a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts until `stop` fires, then drops the listener so new connections
/// are refused. Each session holds a permit of `limit` while it runs.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    current: Current,
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
        let (stream, peer) = match accepted {
            // An IPv4 client on a dual-stack socket is an IPv4 client, for
            // the limits, the plaintext policy and the log.
            Ok((s, p)) => (s, SocketAddr::new(p.ip().to_canonical(), p.port())),
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The config in force now, for this connection's whole life.
        let ctx = current.get();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(client = %peer, "connection limit reached");
            refuse(
                &ctx,
                stream,
                LimitKind::Connections,
                Refusal::TooManyConnections,
            );
            continue;
        };
        let origin = origin.clone();
        let force_close = force_close.clone();
        tokio::spawn(async move {
            if let Some((stream, client, known)) = admit(&ctx, &origin, stream, peer).await {
                let origin = Origin {
                    client_known: known,
                    ..origin
                };
                let (waiting, made_room) = ctx.limits.pre_login.enter(client.ip());
                if made_room {
                    ctx.metrics.limit_rejected(LimitKind::ConnectionsPerIp);
                    info!(client = %client, "per-address limit: the oldest connection not logged in closed to make room");
                }
                let evicted = waiting.evicted();
                let local = stream.local_addr().unwrap_or(client);
                let stream = Stream::Plain(stream);
                // Boxed, so that this task does not hold the session's space
                // beside the task that runs it.
                let session = Box::pin(session::serve(
                    stream,
                    client,
                    local,
                    ctx.clone(),
                    origin,
                    force_close,
                    Some(waiting),
                ));
                let evicted = async move { evicted.notified().await };
                contained(&ctx.metrics, session, evicted).await;
            }
            drop(permit);
        });
    }
}

/// Runs a session as a task of its own, so that a panic in it (a bug)
/// ends that session only. The panic hook has logged it; it is counted here.
/// The session is ended (its connection closed) if `until` completes first.
pub(crate) async fn contained(
    metrics: &Metrics,
    session: impl Future<Output = ()> + Send + 'static,
    until: impl Future<Output = ()>,
) {
    let mut task = tokio::spawn(session);
    tokio::select! {
        ended = &mut task => {
            if ended.is_err_and(|e| e.is_panic()) {
                metrics.session_panics.inc();
            }
        }
        () = until => {
            task.abort();
            debug!("closed to make room for a newer connection from its address");
        }
    }
}

/// Logs panics once, at error level, with their place and message and no
/// backtrace: a backtrace per session would cost memory and log volume
/// that a client could trigger at will. The session span in effect at the
/// panic names the session.
pub(crate) fn log_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            error!(%location, message, "panic: this session is closed, the others go on");
        }));
    });
}

/// On PROXY-protocol listeners: only trusted balancers, and their header
/// gives the client's address; a header that names none (UNKNOWN, LOCAL)
/// leaves the balancer's, marked unknown (false). Elsewhere the peer is
/// the client.
async fn admit(
    ctx: &Context,
    origin: &Origin,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, SocketAddr, bool)> {
    if origin.proxy_trusted.is_empty() {
        return Some((stream, peer, true));
    }
    if !origin.proxy_trusted.iter().any(|n| n.contains(&peer.ip())) {
        warn!(peer = %peer, "connection from outside proxy_trusted refused on a PROXY-protocol listener");
        ctx.metrics.limit_rejected(LimitKind::ProxyUntrusted);
        return None;
    }
    match proxy::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
        Ok(Some(client)) => Some((stream, client, true)),
        Ok(None) => Some((stream, peer, false)),
        Err(e) => {
            warn!(peer = %peer, error = %e, "PROXY header refused");
            ctx.metrics.limit_rejected(LimitKind::ProxyHeader);
            None
        }
    }
}

/// Answers the refusal and closes, without holding up the caller.
fn refuse(ctx: &Context, mut stream: TcpStream, kind: LimitKind, refusal: Refusal) {
    ctx.metrics.limit_rejected(kind);
    let mut line = bytes::BytesMut::new();
    answer(&refusal).write(&mut line);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&line)).await;
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::contained;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn a_panicking_session_ends_alone_and_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = oneshot::channel::<u32>();
        let (done_tx, done_rx) = oneshot::channel();
        let m = metrics.clone();
        // A healthy session waits for input while its neighbour panics.
        let healthy = tokio::spawn(async move {
            contained(
                &m,
                async move {
                    let got = rx.await.unwrap_or(0);
                    let _ = done_tx.send(got);
                },
                std::future::pending(),
            )
            .await
        });
        let values: Vec<u32> = Vec::new();
        contained(
            &metrics,
            async move {
                let _ = values[3];
            },
            std::future::pending(),
        )
        .await;
        assert_eq!(metrics.session_panics.get(), 1);
        tx.send(7).unwrap();
        assert_eq!(done_rx.await.unwrap(), 7, "the other session went on");
        healthy.await.unwrap();
        assert_eq!(metrics.session_panics.get(), 1);
    }
}
