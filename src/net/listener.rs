//! Accept loops: the PROXY protocol, the connection limits, and handing each
//! connection to a session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{error, warn};

use super::proxy;
use super::stream::Stream;
use crate::gateway::session::{self, Origin};
use crate::gateway::Context;

/// Time a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(client = %peer, "connection limit reached");
            refuse(
                &ctx,
                stream,
                "connections",
                "Too many connections, try again later.",
            );
            continue;
        };
        let ctx = ctx.clone();
        let origin = origin.clone();
        let force_close = force_close.clone();
        tokio::spawn(async move {
            if let Some((stream, client)) = admit(&ctx, &origin, stream, peer).await {
                let Some(slot) = ctx.limits.per_ip.acquire(client.ip()) else {
                    warn!(client = %client, "per-address connection limit reached");
                    refuse(
                        &ctx,
                        stream,
                        "connections_per_ip",
                        "Too many connections from your address.",
                    );
                    return;
                };
                let local = stream.local_addr().unwrap_or(client);
                let stream = Stream::Plain(stream);
                session::serve(stream, client, local, ctx, origin, force_close).await;
                drop(slot);
            }
            drop(permit);
        });
    }
}

/// On PROXY-protocol listeners: only trusted balancers, and their header
/// gives the client's address. Elsewhere the peer is the client.
async fn admit(
    ctx: &Context,
    origin: &Origin,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, SocketAddr)> {
    if origin.proxy_trusted.is_empty() {
        return Some((stream, peer));
    }
    if !origin.proxy_trusted.iter().any(|n| n.contains(&peer.ip())) {
        warn!(peer = %peer, "connection from outside proxy_trusted refused on a PROXY-protocol listener");
        ctx.metrics
            .limit_rejections
            .with_label_values(&["proxy_untrusted"])
            .inc();
        return None;
    }
    match proxy::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
        Ok(source) => Some((stream, source.unwrap_or(peer))),
        Err(e) => {
            warn!(peer = %peer, error = %e, "PROXY header refused");
            ctx.metrics
                .limit_rejections
                .with_label_values(&["proxy_header"])
                .inc();
            None
        }
    }
}

/// Answers `-ERR [SYS/TEMP]` and closes, without holding up the caller.
fn refuse(ctx: &Context, mut stream: TcpStream, kind: &'static str, text: &'static str) {
    ctx.metrics
        .limit_rejections
        .with_label_values(&[kind])
        .inc();
    tokio::spawn(async move {
        let msg = format!("-ERR [SYS/TEMP] {text}\r\n");
        let _ =
            tokio::time::timeout(Duration::from_secs(5), stream.write_all(msg.as_bytes())).await;
    });
}
