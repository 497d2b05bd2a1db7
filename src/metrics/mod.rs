//! Prometheus metrics, one registry per server instance. Labels never carry
//! user names, client addresses or anything secret: only names chosen by the
//! admin (listener, route) and fixed vocabularies (command, result, reason).

mod labels;

pub use labels::{
    FailureReason, LimitKind, LoginResult, Mechanism, Outcome, RefreshResult, StoreOperation,
    ThrottleKind, UidlEvent,
};

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub sessions_open: IntGaugeVec,
    pub sessions: IntCounterVec,
    pub logins: IntCounterVec,
    pub commands: IntCounterVec,
    pub command_seconds: HistogramVec,
    pub sent_bytes: IntCounter,
    pub messages_sent: IntCounterVec,
    pub messages_deleted: IntCounter,
    pub quit_failures: IntCounter,
    pub session_panics: IntCounter,
    pub snapshot_messages: Histogram,
    pub upstream_connects: IntCounterVec,
    pub upstream_failures: IntCounterVec,
    pub upstream_login_seconds: HistogramVec,
    pub upstream_command_seconds: HistogramVec,
    pub upstream_open: IntGaugeVec,
    pub upstream_pooled: IntGaugeVec,
    pub upstream_up: IntGaugeVec,
    pub limit_rejections: IntCounterVec,
    pub auth_throttled: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub reloads: IntCounterVec,
    pub connection_limit: IntGauge,
    pub draining: IntGauge,
    pub uidl_events: IntCounterVec,
    pub uidl_rematched: IntCounterVec,
    pub auth_penalty_entries: IntGauge,
    pub state_store_up: IntGaugeVec,
    pub state_store_errors: IntCounterVec,
    pub oauth_refreshes: IntCounterVec,
    pub oauth_enrolled: IntGaugeVec,
    pub oauth_token_expiry: prometheus::GaugeVec,
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric.expect("valid metric");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric");
                m
            }};
        }
        // Unlabelled counters and gauges, one line each.
        macro_rules! counter {
            ($name:literal, $help:literal) => {
                register!(IntCounter::new($name, $help))
            };
        }
        macro_rules! gauge {
            ($name:literal, $help:literal) => {
                register!(IntGauge::new($name, $help))
            };
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let latency = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(latency_buckets()),
                labels,
            )
        };

        let build_info = register!(gauge_vec(
            "popgate_build_info",
            "Always 1; the labels tell the running version.",
            &["version"]
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        Metrics {
            sessions_open: register!(gauge_vec(
                "popgate_sessions_open",
                "POP3 sessions currently open.",
                &["listener", "tls"]
            )),
            sessions: register!(counter_vec(
                "popgate_sessions_total",
                "POP3 sessions ended, by how they ended.",
                &["listener", "tls", "outcome"]
            )),
            logins: register!(counter_vec(
                "popgate_logins_total",
                "Login attempts by mechanism and result.",
                &["mechanism", "result"]
            )),
            commands: register!(counter_vec(
                "popgate_commands_total",
                "POP3 commands by command and result (ok or err).",
                &["command", "result"]
            )),
            command_seconds: register!(latency(
                "popgate_command_duration_seconds",
                "Time to answer a POP3 command, upstream work included.",
                &["command"]
            )),
            sent_bytes: counter! { "popgate_sent_message_bytes_total", "Message octets sent to clients by RETR and TOP." },
            messages_sent: register!(counter_vec(
                "popgate_messages_sent_total",
                "Messages sent to clients, by command (RETR or TOP).",
                &["command"]
            )),
            messages_deleted: counter! { "popgate_messages_deleted_total", "Messages removed upstream at QUIT." },
            quit_failures: counter! { "popgate_quit_failures_total", "QUITs whose removal the upstream refused or could not finish: mail the user deleted is still there." },
            session_panics: counter! { "popgate_session_panics_total", "Sessions ended by a panic (a bug): the client was disconnected, other sessions went on." },
            snapshot_messages: register!(Histogram::with_opts(
                HistogramOpts::new(
                    "popgate_snapshot_messages",
                    "Messages in a maildrop at login."
                )
                .buckets(vec![0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0])
            )),
            upstream_connects: register!(counter_vec(
                "popgate_upstream_connections_total",
                "Upstream connection attempts.",
                &["route"]
            )),
            upstream_failures: register!(counter_vec(
                "popgate_upstream_failures_total",
                "Upstream failures by reason (connect, connect_timeout, tls, timeout, closed, io, protocol).",
                &["route", "reason"]
            )),
            upstream_login_seconds: register!(latency(
                "popgate_upstream_login_duration_seconds",
                "From connecting upstream to a selected mailbox with its snapshot.",
                &["route"]
            )),
            upstream_command_seconds: register!(latency(
                "popgate_upstream_command_duration_seconds",
                "Upstream IMAP command latency.",
                &["route", "command"]
            )),
            upstream_open: register!(gauge_vec(
                "popgate_upstream_connections_open",
                "Upstream IMAP connections currently open for sessions and checks (pooled ones apart).",
                &["route"]
            )),
            upstream_pooled: register!(gauge_vec(
                "popgate_upstream_connections_pooled",
                "Upstream IMAP connections opened ahead of logins, waiting in the pool.",
                &["route"]
            )),
            upstream_up: register!(gauge_vec(
                "popgate_upstream_up",
                "1 when the background check last reached the upstream and read its greeting.",
                &["route"]
            )),
            limit_rejections: register!(counter_vec(
                "popgate_limit_rejections_total",
                "Connections or logins refused by a limit, by kind.",
                &["kind"]
            )),
            auth_throttled: register!(counter_vec(
                "popgate_auth_throttled_total",
                "Logins delayed or refused after earlier failures, by kind (ip, user, connection).",
                &["kind"]
            )),
            tls_handshakes: register!(counter_vec(
                "popgate_tls_handshakes_total",
                "TLS handshakes with clients (implicit and STLS), by result.",
                &["listener", "result"]
            )),
            reloads: register!(counter_vec(
                "popgate_reloads_total",
                "Reloads of files popgate watches and of the config on SIGHUP, by kind (certificate, credentials, config) and result.",
                &["kind", "result"]
            )),
            auth_penalty_entries: gauge! { "popgate_auth_penalty_entries", "Entries in the failed-login tables (networks, users, known addresses) at the last sweep." },
            connection_limit: gauge! { "popgate_connection_limit", "The configured maximum of concurrent POP3 connections." },
            draining: gauge! { "popgate_draining", "1 while shutting down: no new connections, sessions finishing." },
            uidl_events: register!(counter_vec(
                "popgate_uidl_memory_events_total",
                "UIDL memory events at login: a mailbox first fingerprinted, a re-match after a UIDVALIDITY change, a store that failed (template UIDLs).",
                &["event"]
            )),
            uidl_rematched: register!(counter_vec(
                "popgate_uidl_rematched_messages_total",
                "Messages of re-matched mailboxes that kept their UIDL (matched) or got a new one (unmatched).",
                &["result"]
            )),
            state_store_up: register!(gauge_vec(
                "popgate_state_store_up",
                "1 when the state store (UIDL memory; on Redis also session leases and login penalty) answered its last check.",
                &["backend"]
            )),
            state_store_errors: register!(counter_vec(
                "popgate_state_store_errors_total",
                "State store operations that failed, by operation.",
                &["operation"]
            )),
            oauth_refreshes: register!(counter_vec(
                "popgate_oauth_token_refreshes_total",
                "Access tokens asked of the authorization server, by route and result (ok, rejected: the user must enrol again, unavailable).",
                &["route", "result"]
            )),
            oauth_enrolled: register!(gauge_vec(
                "popgate_oauth_enrolled_users",
                "Users with a stored refresh token, by route (flow refresh_token).",
                &["route"]
            )),
            oauth_token_expiry: register!(prometheus::GaugeVec::new(
                Opts::new(
                    "popgate_oauth_access_token_expiry_seconds",
                    "Seconds until the access token held longest without renewal expires, by route (negative once expired; absent while none is held)."
                ),
                &["route"]
            )),
            registry,
        }
    }

    /// The token broker's series of a route, at 0.
    pub fn init_oauth(&self, route: &str, enrolment: bool) {
        for r in RefreshResult::ALL {
            self.oauth_refreshes.with_label_values(&[route, r.as_str()]);
        }
        if enrolment {
            self.oauth_enrolled.with_label_values(&[route]);
        }
    }

    pub fn oauth_refreshed(&self, route: &str, result: RefreshResult) {
        self.oauth_refreshes
            .with_label_values(&[route, result.as_str()])
            .inc();
    }

    /// The state store's series, at 0 errors; `backend` names it.
    pub fn init_store(&self, backend: &'static str) {
        self.state_store_up.with_label_values(&[backend]);
        for op in StoreOperation::ALL {
            self.state_store_errors.with_label_values(&[op.as_str()]);
        }
    }

    pub fn store_failed(&self, operation: StoreOperation) {
        self.state_store_errors
            .with_label_values(&[operation.as_str()])
            .inc();
    }

    /// Creates the series of every known label value at 0, so that rates
    /// see the first event and dashboards show 0 rather than no data.
    pub fn init_labels(&self, listeners: &[(String, &'static str)], routes: &[String]) {
        // The mechanisms every setup offers; the others appear when used.
        const MECHANISMS: &[Mechanism] = &[Mechanism::User, Mechanism::Plain, Mechanism::Login];
        for (listener, tls) in listeners {
            let (listener, tls) = (listener.as_str(), *tls);
            self.sessions_open.with_label_values(&[listener, tls]);
            for outcome in Outcome::ALL {
                self.sessions
                    .with_label_values(&[listener, tls, outcome.as_str()]);
            }
            if tls != "none" {
                for result in ["ok", "error"] {
                    self.tls_handshakes.with_label_values(&[listener, result]);
                }
            }
        }
        for m in MECHANISMS {
            for r in LoginResult::ALL {
                self.logins.with_label_values(&[m.as_str(), r.as_str()]);
            }
        }
        for route in routes {
            let route = route.as_str();
            self.upstream_connects.with_label_values(&[route]);
            self.upstream_open.with_label_values(&[route]);
            self.upstream_pooled.with_label_values(&[route]);
            for reason in FailureReason::ALL {
                self.upstream_failures
                    .with_label_values(&[route, reason.as_str()]);
            }
        }
        for kind in LimitKind::ALL {
            self.limit_rejections.with_label_values(&[kind.as_str()]);
        }
        for kind in ThrottleKind::ALL {
            self.auth_throttled.with_label_values(&[kind.as_str()]);
        }
        for event in UidlEvent::ALL {
            self.uidl_events.with_label_values(&[event.as_str()]);
        }
        for result in ["matched", "unmatched"] {
            self.uidl_rematched.with_label_values(&[result]);
        }
    }

    pub fn limit_rejected(&self, kind: LimitKind) {
        self.limit_rejections
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub fn throttled(&self, kind: ThrottleKind) {
        self.auth_throttled
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub fn uidl_event(&self, event: UidlEvent) {
        self.uidl_events.with_label_values(&[event.as_str()]).inc();
    }

    pub fn uidl_rematched(&self, matched: u64, unmatched: u64) {
        self.uidl_rematched
            .with_label_values(&["matched"])
            .inc_by(matched);
        self.uidl_rematched
            .with_label_values(&["unmatched"])
            .inc_by(unmatched);
    }

    pub fn login(&self, mechanism: Mechanism, result: LoginResult) {
        self.logins
            .with_label_values(&[mechanism.as_str(), result.as_str()])
            .inc();
    }

    pub fn upstream_failed(&self, route: &str, reason: FailureReason) {
        self.upstream_failures
            .with_label_values(&[route, reason.as_str()])
            .inc();
    }

    pub fn session_ended(&self, listener: &str, tls: &str, outcome: Outcome) {
        self.sessions
            .with_label_values(&[listener, tls, outcome.as_str()])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn renders_build_info() {
        let m = Metrics::new();
        m.logins.with_label_values(&["PLAIN", "ok"]).inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("popgate_build_info{version=\""), "{text}");
        assert!(text.contains("popgate_logins_total{mechanism=\"PLAIN\",result=\"ok\"} 1"));
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.messages_deleted.inc();
        assert_eq!(b.messages_deleted.get(), 0);
    }
}
