//! The backend's limits and pool as configured, what the health check
//! sees, and an in-memory server for the tests beside it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::Config;

/// An in-memory server that sends `greeting` and then holds each
/// connection until the client drops it; `opened` counts them.
pub(crate) fn greeting_only(greeting: &'static str, opened: Arc<AtomicUsize>) -> Connector {
    Connector::Memory(Arc::new(move || {
        opened.fetch_add(1, SeqCst);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let _ = theirs.write_all(format!("{greeting}\r\n").as_bytes()).await;
            let mut sink = [0u8; 64];
            while matches!(theirs.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        ours
    }))
}

#[tokio::test]
async fn what_the_health_check_sees_decides_the_mechanisms_offered() {
    let config = Config::for_tests("", "");
    let greeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2] ready";
    let opened = Arc::new(AtomicUsize::new(0));
    let connector = greeting_only(greeting, opened.clone());
    let metrics = Arc::new(Metrics::new());
    let b = Backend::with_connector("default", "upstream", &config.upstream, metrics, connector)
        .unwrap();
    assert!(!b.offered("AUTH=XOAUTH2"), "nothing seen yet");
    let ends = Endpoints {
        client: "192.0.2.1:40000".parse().unwrap(),
        local: "127.0.0.1:110".parse().unwrap(),
    };
    let login = b.connect(Some(ends)).await.unwrap();
    assert!(
        !b.offered("AUTH=XOAUTH2"),
        "a login's connection is not the health check's"
    );
    let check = b.connect(None).await.unwrap();
    assert!(b.offered("auth=xoauth2") && b.offered("AUTH=PLAIN"));
    assert!(!b.offered("AUTH=OAUTHBEARER"));
    assert_eq!(opened.load(SeqCst), 2);
    drop((login, check));
}

#[test]
fn the_connection_limit_and_the_pool_follow_the_config_and_zero_turns_each_off() {
    let metrics = Arc::new(Metrics::new());
    for (n, permits) in [(0, None), (1, Some(1)), (3, Some(3))] {
        let config = Config::for_tests(&format!("  max_connections: {n}\n  pool: {n}\n"), "");
        let b = Backend::new("default", "upstream", &config.upstream, metrics.clone()).unwrap();
        let limit = b.limit.as_ref().map(|s| s.available_permits());
        assert_eq!(limit, permits, "max_connections: {n}");
        assert_eq!(b.pool.is_some(), n > 0, "pool: {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_health_check_reports_each_result_and_keeps_the_gauge() {
    let config = Config::for_tests("", "");
    let (logs, _logging) = crate::test_logs::Logs::capture();
    for (greeting, up, logged) in [
        (
            "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
            true,
            "upstream reachable",
        ),
        ("* BYE not now", false, "upstream unreachable"),
    ] {
        let connector = greeting_only(greeting, Arc::new(AtomicUsize::new(0)));
        let metrics = Arc::new(Metrics::new());
        let b = Backend::with_connector("east", "upstream", &config.upstream, metrics, connector)
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let check = tokio::spawn(health_loop(b.clone(), move |ok| {
            let _ = tx.send(ok);
        }));
        // The gauge is set after each report: two reports, one gauge.
        assert_eq!(rx.recv().await, Some(up), "{greeting}");
        assert_eq!(rx.recv().await, Some(up), "{greeting}");
        let gauge = b.metrics.upstream_up.with_label_values(&["east"]).get();
        assert_eq!(gauge, i64::from(up), "{greeting}");
        // Logged once, not at every check.
        assert_eq!(logs.text().matches(logged).count(), 1, "{}", logs.text());
        check.abort();
    }
}
