//! A gateway whose upstream is the scripted server of [`crate::peer`]:
//! shared by the session tests and the `session` fuzz target.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use popgate::config::{Config, ListenerTls, DEFAULT_ROUTE};
use popgate::gateway::backend::{Backend, Connector};
use popgate::gateway::session::{serve, Origin};
use popgate::gateway::Context;
use popgate::metrics::Metrics;
use popgate::net::stream::Stream;

use crate::peer::Peer;

/// The context of `config`, changed by `adjust`, whose default route
/// connects to `peer`.
pub fn context(config: Config, peer: &Peer, adjust: impl FnOnce(&mut Context)) -> Arc<Context> {
    let metrics = Arc::new(Metrics::new());
    let mut ctx = Context::new(config, metrics.clone()).expect("context");
    adjust(&mut ctx);
    let open = peer.clone();
    let connector = Connector::Memory(Arc::new(move || open.open()));
    let backend = Backend::with_connector(
        DEFAULT_ROUTE,
        "upstream",
        &ctx.config.upstream,
        metrics,
        connector,
    )
    .expect("backend");
    ctx.backends.insert(DEFAULT_ROUTE.into(), backend);
    Arc::new(ctx)
}

/// A session on the `test` listener (no TLS), from 127.0.0.1: the
/// client's end of its connection, the sender that forces it closed, and
/// its task.
pub fn session(ctx: Arc<Context>) -> (DuplexStream, watch::Sender<bool>, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(16 * 1024);
    let (force, force_rx) = watch::channel(false);
    let origin = Origin {
        listener: "test".into(),
        tls: ListenerTls::None,
        acceptor: None,
        proxy_trusted: Arc::from([]),
        client_known: true,
    };
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:110".parse().unwrap();
    let task = tokio::spawn(serve(
        Stream::Memory(server),
        addr,
        local,
        ctx,
        origin,
        force_rx,
        None,
    ));
    (client, force, task)
}
