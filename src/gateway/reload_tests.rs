//! Which changes a reload takes and which need a restart, and what a
//! reloaded context carries over.

use std::sync::Arc;

use super::restart_needed;
use crate::config::Config;
use crate::gateway::Context;
use crate::metrics::Metrics;

const OAUTH2: &str = "upstream.oauth2 (or an upstreams entry's)";

/// A config; `upstream` and `east` add lines to those backends' sections
/// (indented by two and four spaces), `extra` adds top-level YAML.
fn config(upstream: &str, east: &str, extra: &str) -> Config {
    Config::for_tests(
        upstream,
        &format!(
            "upstreams:\n  east:\n    address: \"imap.east:143\"\n{east}\
             state:\n  path: /nonexistent/popgate\n{extra}"
        ),
    )
}

fn oauth2(indent: &str, client: &str) -> String {
    format!(
        "{indent}oauth2:\n{indent}  token_url: \"https://login.example/token\"\n\
         {indent}  client_id: {client}\n{indent}  flow: refresh_token\n"
    )
}

#[test]
fn a_reload_takes_routes_and_limits_but_not_what_was_set_up_at_start() {
    let base = config("", "", "");
    assert_eq!(restart_needed(&base, &base), None);
    let moved = config("  timeout: 99s\n", "    max_connections: 7\n", "");
    assert_eq!(
        restart_needed(&base, &moved),
        None,
        "backends are made anew"
    );
    let limits = config("", "", "limits:\n  connections_per_ip: 3\n");
    assert_eq!(restart_needed(&base, &limits), None);

    let mut listeners = base.clone();
    listeners.listeners.0[0].address = "127.0.0.1:1111".parse().unwrap();
    assert_eq!(restart_needed(&base, &listeners), Some("listeners"));
    let migration = config(
        "",
        "",
        "migration:\n  pop3:\n    address: \"127.0.0.1:110\"\n",
    );
    assert_eq!(restart_needed(&base, &migration), Some("migration"));
    let penalty = config("", "", "limits:\n  auth_penalty_max: 3s\n");
    assert_eq!(
        restart_needed(&base, &penalty),
        Some("limits.auth_penalty_*")
    );
}

#[test]
fn the_token_brokers_of_every_route_need_a_restart() {
    let base = config(&oauth2("  ", "popgate"), "", "");
    assert_eq!(restart_needed(&base, &base), None);
    let other_client = config(&oauth2("  ", "other"), "", "");
    assert_eq!(restart_needed(&base, &other_client), Some(OAUTH2));
    let east = config(&oauth2("  ", "popgate"), &oauth2("    ", "popgate"), "");
    assert_eq!(restart_needed(&base, &east), Some(OAUTH2));
}

#[test]
fn the_login_delays_carry_over_while_the_delay_stays() {
    let plain = |extra: &str| Config::for_tests("", extra);
    let minute = "policy:\n  login_delay: 60s\n";
    let ctx = Context::new(plain(minute), Arc::new(Metrics::new())).unwrap();
    let old = ctx.login_delays.clone().expect("a delay is set");
    let same = ctx.reloaded(plain(minute)).unwrap();
    assert!(
        Arc::ptr_eq(&old, same.login_delays.as_ref().unwrap()),
        "bookings kept"
    );
    let longer = ctx
        .reloaded(plain("policy:\n  login_delay: 120s\n"))
        .unwrap();
    let new = longer.login_delays.as_ref().unwrap();
    assert!(!Arc::ptr_eq(&old, new));
    assert_eq!(new.delay().as_secs(), 120);
    assert!(ctx.reloaded(plain("")).unwrap().login_delays.is_none());
}

#[test]
fn a_reload_retunes_the_session_limit_for_slots_taken_afterwards() {
    let plain = |extra: &str| Config::for_tests("", extra);
    let ctx = Context::new(plain(""), Arc::new(Metrics::new())).unwrap();
    let user = ctx.limits.keys.user("alice");
    let held = ctx.limits.per_user.acquire(user).expect("ten allowed");
    let one = ctx
        .reloaded(plain("limits:\n  sessions_per_user: 1\n"))
        .unwrap();
    assert!(
        one.limits.per_user.acquire(user).is_none(),
        "the slot held fills the new limit"
    );
    drop(held);
    assert!(one.limits.per_user.acquire(user).is_some());
}
