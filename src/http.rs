//! The HTTP sidecar: `/metrics`, `/healthz` and `/readyz`.
//!
//! Readiness is computed from state that other tasks keep up to date (the
//! listeners, a background upstream check, the drain), never by probing the
//! upstream per request, so a scrape storm cannot hammer the backend.
//!
//! Idle clients must not starve the probes: each client address may hold
//! only a few connections, and when all are taken a newcomer still gets in
//! while the oldest connection is asked to close (an idle keep-alive closes
//! at once). At most `RESERVED` such closes run at a time.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    pub listening: AtomicBool,
    pub upstream_ok: AtomicBool,
    pub draining: AtomicBool,
    /// False while the state store is down and logins need it.
    pub store_ok: AtomicBool,
}

impl Health {
    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("draining: shutting down")
        } else if !self.listening.load(Ordering::Relaxed) {
            Some("listeners not up")
        } else if !self.upstream_ok.load(Ordering::Relaxed) {
            Some("upstream unreachable")
        } else if !self.store_ok.load(Ordering::Relaxed) {
            Some("state store unreachable")
        } else {
            None
        }
    }
}

pub struct Settings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Connections beyond `max_connections` admitted while older ones close.
const RESERVED: usize = 1;

/// The open connections, oldest first, and how many each address holds.
struct Table {
    max: usize,
    per_ip: usize,
    next_id: u64,
    open: BTreeMap<u64, oneshot::Sender<()>>,
    by_ip: HashMap<IpAddr, usize>,
    closing: usize,
}

impl Table {
    /// A connection's id and the signal that asks it to close, or `None`
    /// when it must be refused.
    fn admit(&mut self, ip: IpAddr) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.by_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            return None;
        }
        if self.open.len() >= self.max {
            if self.closing >= RESERVED {
                return None;
            }
            let (_, close) = self.open.pop_first()?;
            let _ = close.send(());
            self.closing += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.open.insert(id, tx);
        *self.by_ip.entry(ip).or_default() += 1;
        Some((id, rx))
    }

    fn release(&mut self, id: u64, ip: IpAddr) {
        if self.open.remove(&id).is_none() {
            self.closing -= 1;
        }
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// Serves until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    settings: Settings,
) {
    let table = Arc::new(Mutex::new(Table {
        max: settings.max_connections,
        per_ip: settings.max_connections_per_ip,
        next_id: 0,
        open: BTreeMap::new(),
        by_ip: HashMap::new(),
        closing: 0,
    }));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let admitted = table.lock().unwrap_or_else(|p| p.into_inner()).admit(ip);
        let Some((id, close)) = admitted else {
            debug!(client = %peer, "metrics connection limit reached");
            continue; // dropping the stream closes it
        };
        let (metrics, health, table) = (metrics.clone(), health.clone(), table.clone());
        let timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = route(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Also bounds slow readers of the response and idle keep-alives.
            let lifetime = tokio::time::sleep(timeout * 6);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = lifetime => {}
                _ = close => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(timeout, conn).await;
                }
            }
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .release(id, ip);
        });
    }
}

fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics.render())))
            .expect("valid response"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match health.not_ready() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per_ip: usize) -> Table {
        Table {
            max,
            per_ip,
            next_id: 0,
            open: BTreeMap::new(),
            by_ip: HashMap::new(),
            closing: 0,
        }
    }

    #[test]
    fn a_full_table_closes_the_oldest_for_a_newcomer() {
        let mut t = table(2, 8);
        let ip = |n| IpAddr::from([10, 0, 0, n]);
        let (a, mut close_a) = t.admit(ip(1)).unwrap();
        let (_, mut close_b) = t.admit(ip(2)).unwrap();
        let (c, _) = t.admit(ip(3)).unwrap();
        assert!(close_a.try_recv().is_ok(), "the oldest was asked to close");
        assert!(close_b.try_recv().is_err());
        assert!(t.admit(ip(4)).is_none(), "one close at a time");
        t.release(a, ip(1));
        assert!(t.admit(ip(4)).is_some());
        t.release(c, ip(3));
        assert_eq!(t.closing, 1);
    }

    #[test]
    fn one_address_gets_only_its_share() {
        let mut t = table(64, 2);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let (a, _) = t.admit(ip).unwrap();
        let _b = t.admit(ip).unwrap();
        assert!(t.admit(ip).is_none());
        assert!(t.admit(IpAddr::from([10, 0, 0, 2])).is_some());
        t.release(a, ip);
        assert!(t.admit(ip).is_some());
    }
}
