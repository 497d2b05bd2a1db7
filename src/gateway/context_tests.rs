//! What a config makes of the context: a backend per route, and whether
//! logins wait for the state store.

use std::sync::Arc;

use super::Context;
use crate::config::Config;
use crate::metrics::Metrics;

fn context(extra: &str) -> Context {
    Context::new(Config::for_tests("", extra), Arc::new(Metrics::new())).expect("context")
}

#[test]
fn every_route_has_a_backend_by_its_name() {
    let ctx = context(
        "upstreams:\n  east:\n    address: \"imap.east:143\"\n  west:\n    address: \"imap.west:143\"\n",
    );
    let mut names: Vec<&str> = ctx.backends.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["default", "east", "west"]);
    assert_eq!(ctx.backends["east"].address(), "imap.east:143");
    assert_eq!(ctx.default_backend().address(), "imap.test:143");
}

#[test]
fn logins_wait_for_the_state_store_only_when_told_to_refuse() {
    let dir = crate::test_support::TestDir::new("context");
    assert!(
        !context("").store_required(),
        "no store, nothing to wait for"
    );
    for (mode, required) in [("refuse", true), ("serve", false)] {
        let state = format!(
            "state:\n  path: {}\n  on_unavailable: {mode}\n",
            dir.0.join(mode).display()
        );
        assert_eq!(context(&state).store_required(), required, "{mode}");
    }
}

#[test]
fn every_session_gets_an_id_of_its_own() {
    // The id ties a session's log lines together and seeds its APOP
    // timestamp.
    let ctx = context("");
    let ids: std::collections::HashSet<u64> = (0..3).map(|_| ctx.session_id()).collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn the_sweeper_keeps_the_penalty_gauge_current() {
    let ctx = Arc::new(context(""));
    let limits = &ctx.limits;
    let ip = "192.0.2.1".parse().unwrap();
    let now = std::time::Instant::now();
    limits.failed(limits.keys.network(ip), limits.keys.user("alice"), now);
    let sweeper = tokio::spawn(super::sweep_limits(ctx.clone()));
    let gauge = &ctx.metrics.auth_penalty_entries;
    crate::test_support::until("the first sweep to set the gauge", || gauge.get() > 0).await;
    assert_eq!(gauge.get(), limits.remembered() as i64);
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn the_store_watch_reports_a_lost_store_and_its_return() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (logs, _logging) = crate::test_logs::Logs::capture();
    let dir = crate::test_support::TestDir::new("watch-store");
    let store = dir.0.join("store");
    let state = format!(
        "state:\n  path: {}\n  on_unavailable: refuse\n",
        store.display()
    );
    let ctx = Arc::new(context(&state));
    let health = Arc::new(crate::http::Health::default());
    let watch = tokio::spawn(super::watch_store(ctx.clone(), health.clone()));
    let up = ctx.metrics.state_store_up.with_label_values(&["embedded"]);
    let ready = || health.store_ok.load(Ordering::Relaxed);
    crate::test_support::until("the store checked", || up.get() == 1 && ready()).await;
    // The embedded store's file gone from its path: logins that need it
    // must wait, and /readyz says so.
    let moved = dir.0.join("moved");
    std::fs::rename(&store, &moved).unwrap();
    crate::test_support::until("the lost store noticed", || up.get() == 0 && !ready()).await;
    // Several checks (the clock is the test's): each change is logged once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::rename(&moved, &store).unwrap();
    crate::test_support::until("the store back", || up.get() == 1 && ready()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = logs.text();
    assert_eq!(text.matches("state store unreachable").count(), 1);
    assert_eq!(text.matches("state store reachable again").count(), 1);
    watch.abort();
}
