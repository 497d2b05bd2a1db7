//! The fixed vocabularies of metric labels, one enum each, so that a value
//! used in code is also among those created at start.

macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every value, for creating the label values at start.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

label_values!(
    /// How a session ended (`popgate_sessions_total{outcome}`).
    Outcome {
        Quit => "quit",
        QuitFailed => "quit_failed",
        IdleTimeout => "idle_timeout",
        ClientDisconnected => "client_disconnected",
        UpstreamFailure => "upstream_failure",
        TooManyBadCommands => "too_many_bad_commands",
        AuthFailures => "auth_failures",
        LoginTimeout => "login_timeout",
        Shutdown => "shutdown",
        TlsFailed => "tls_failed",
    }
);

label_values!(
    /// How the user logged in (`popgate_logins_total{mechanism}`).
    Mechanism {
        User => "USER",
        Plain => "PLAIN",
        Login => "LOGIN",
        Apop => "APOP",
        CramMd5 => "CRAM-MD5",
        Xoauth2 => "XOAUTH2",
        Oauthbearer => "OAUTHBEARER",
    }
);

label_values!(
    /// How a login ended (`popgate_logins_total{result}`).
    LoginResult {
        Ok => "ok",
        AuthFailed => "auth_failed",
        UpstreamUnavailable => "upstream_unavailable",
        InUse => "in_use",
        MailboxError => "mailbox_error",
        Throttled => "throttled",
        StoreUnavailable => "store_unavailable",
    }
);

label_values!(
    /// Why an upstream connection or command failed
    /// (`popgate_upstream_failures_total{reason}`); refusals are not failures.
    FailureReason {
        Connect => "connect",
        ConnectTimeout => "connect_timeout",
        Tls => "tls",
        Timeout => "timeout",
        Closed => "closed",
        Io => "io",
        Protocol => "protocol",
    }
);

label_values!(
    /// Which limit refused something (`popgate_limit_rejections_total{kind}`).
    LimitKind {
        Connections => "connections",
        ConnectionsPerIp => "connections_per_ip",
        SessionsPerUser => "sessions_per_user",
        UpstreamConnections => "upstream_connections",
        ProxyUntrusted => "proxy_untrusted",
        ProxyHeader => "proxy_header",
    }
);

label_values!(
    /// What slowed or ended failing logins (`popgate_auth_throttled_total{kind}`).
    ThrottleKind {
        Ip => "ip",
        User => "user",
        Connection => "connection",
    }
);

label_values!(
    /// What the UIDL memory did at a login (`popgate_uidl_memory_events_total{event}`).
    UidlEvent {
        FirstContact => "first_contact",
        Rematch => "rematch",
        StoreFailed => "store_failed",
        Migrated => "migrated",
        MigrationFailed => "migration_failed",
    }
);

label_values!(
    /// What the state store failed at (`popgate_state_store_errors_total{operation}`).
    StoreOperation {
        Load => "load",
        Save => "save",
        Lease => "lease",
        Penalty => "penalty",
        LoginDelay => "login_delay",
        Ping => "ping",
    }
);

label_values!(
    /// How a request for an access token ended
    /// (`popgate_oauth_token_refreshes_total{result}`): rejected is a
    /// refresh token the server refused (the user must enrol again),
    /// unavailable a server unreachable, too slow, or answering garbage or
    /// another error.
    RefreshResult {
        Ok => "ok",
        Rejected => "rejected",
        Unavailable => "unavailable",
    }
);
