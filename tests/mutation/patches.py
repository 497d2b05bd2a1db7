"""The source patches of the end-to-end mutation check: each one small,
plausible change to popgate that breaks a guarantee the README states, with
the end-to-end tests that should notice.

A patch replaces `old` (which must occur exactly once in `file`) by `new`;
`also` holds further (old, new) pairs in the same file for a change that
needs two places. `tests` are pytest arguments, run in order, each on its
own: a node id, or a file followed by `-k EXPR`. The first failing one
kills the patch."""

from __future__ import annotations

from dataclasses import dataclass

SESSION = "src/gateway/session/mod.rs"
TRANSACTION = "src/gateway/session/transaction.rs"
UPDATE = "src/gateway/session/update.rs"
GATE = "src/gateway/session/gate.rs"
AUTHORIZATION = "src/gateway/session/authorization.rs"
MAILDROP = "src/gateway/maildrop.rs"


@dataclass(frozen=True)
class Patch:
    name: str
    guarantee: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    also: tuple[tuple[str, str], ...] = ()

    def hunks(self) -> list[tuple[str, str]]:
        return [(self.old, self.new), *self.also]


PATCHES: list[Patch] = [
    Patch(
        "bare-expunge",
        "QUIT removes exactly the UIDs this session deleted; other clients' \\Deleted mail survives",
        UPDATE,
        'backend.timed("UID EXPUNGE", imap.uid_expunge(set)).await?;',
        'backend.timed("UID EXPUNGE", imap.expunge()).await?;',
        (
            "tests/e2e/test_safety.py::test_other_clients_deleted_flags_survive_our_quit",
            "tests/e2e/test_faults_concurrent.py::test_deleted_flag_set_by_another_client_mid_session_is_theirs",
        ),
    ),
    Patch(
        "dotstuff-lone-dot-only",
        "RETR sends exactly the IMAP BODY[] octets, dot-stuffed",
        "src/pop3/dotstuff.rs",
        "if self.at_line_start && input[0] == b'.' {",
        "if self.at_line_start && input[0] == b'.'"
        " && matches!(input.get(1), None | Some(b'\\r' | b'\\n')) {",
        (
            "tests/e2e/test_compat.py::test_retr_sends_exactly_the_imap_body",
            "tests/e2e/test_compat.py::test_listing_and_top_match_dovecot",
        ),
    ),
    Patch(
        "idle-timeout-applies-update",
        "a session that times out leaves the mailbox as it found it",
        SESSION,
        "            End::Client(ConnError::Timeout) => {\n"
        "                s.refuse(Refusal::IdleTimeout);\n",
        "            End::Client(ConnError::Timeout) => {\n"
        "                let _ = s.quit().await;\n"
        "                s.refuse(Refusal::IdleTimeout);\n",
        ("tests/e2e/test_guarantees.py::test_idle_timeout_in_transaction_applies_nothing",),
    ),
    Patch(
        "top-marks-seen",
        "TOP never sets \\Seen",
        TRANSACTION,
        "        let command = if top.is_none() {\n"
        "            maildrop.mark_retrieved(n);\n",
        "        if top.is_some_and(|k| k > 0) {\n"
        "            maildrop.mark_retrieved(n);\n"
        "        }\n"
        "        let command = if top.is_none() {\n"
        "            maildrop.mark_retrieved(n);\n",
        ("tests/e2e/test_guarantees.py::test_top_never_marks_seen_while_retr_does",),
    ),
    Patch(
        "plaintext-judged-on-balancer",
        "behind a PROXY balancer, the plaintext policy judges the client's address, not the balancer's",
        SESSION,
        "        let mut conn = ClientConn::new(stream, cfg.max_line_length, cfg.idle_timeout);\n",
        "        let balancer = match &stream {\n"
        "            Stream::Plain(tcp) => tcp.peer_addr().map_or(peer.ip(), |a| a.ip().to_canonical()),\n"
        "            _ => peer.ip(),\n"
        "        };\n"
        "        let mut conn = ClientConn::new(stream, cfg.max_line_length, cfg.idle_timeout);\n",
        ("tests/e2e/test_guarantees.py::test_plaintext_policy_judges_the_proxied_client_not_the_balancer",),
        also=((".any(|n| n.contains(&peer.ip()));", ".any(|n| n.contains(&balancer));"),),
    ),
    Patch(
        "rset-keeps-deletions",
        "RSET unmarks every deleted message; DELE, RSET, QUIT removes nothing",
        MAILDROP,
        "            m.marks &= !DELETED;\n",
        "            m.marks &= !0;\n",
        ("tests/e2e/test_safety.py::test_dele_rset_quit_removes_nothing",),
    ),
    Patch(
        "drop-applies-deletions",
        "a session that drops leaves the mailbox as it found it",
        SESSION,
        "            End::Client(_) => Outcome::ClientDisconnected,\n",
        "            End::Client(_) => {\n"
        "                let _ = s.quit().await;\n"
        "                Outcome::ClientDisconnected\n"
        "            }\n",
        (
            "tests/e2e/test_safety.py::test_dele_then_dropped_connection_removes_nothing",
            "tests/e2e/test_faults_client.py -k test_drop_in_session_touches_nothing",
        ),
    ),
    Patch(
        "shutdown-applies-deletions",
        "a session closed by a shutdown leaves the mailbox as it found it",
        SESSION,
        "            End::Shutdown => Outcome::Shutdown,\n",
        "            End::Shutdown => {\n"
        "                let _ = s.quit().await;\n"
        "                Outcome::Shutdown\n"
        "            }\n",
        (
            "tests/e2e/test_safety.py::test_shutdown_mid_session_removes_nothing",
            "tests/e2e/test_faults_signals.py::test_sigterm_idle_session_removes_nothing",
        ),
    ),
    Patch(
        "retr-not-marked-seen",
        "retrieved messages get \\Seen at QUIT",
        TRANSACTION,
        "        let command = if top.is_none() {\n"
        "            maildrop.mark_retrieved(n);\n",
        "        let command = if top.is_none() {\n",
        ("tests/e2e/test_safety.py::test_quit_removes_exactly_the_deleted_and_marks_retrieved_seen",),
    ),
    Patch(
        "stat-counts-deleted",
        "a deleted message is gone from STAT and LIST for the rest of the session (RFC 1939)",
        MAILDROP,
        "        let (count, octets) = self\n            .live()\n",
        "        let (count, octets) = self\n            .messages.iter().map(|m| (0, m))\n",
        ("tests/e2e/test_robustness.py::test_pipelined_burst_of_200_commands_is_answered_in_order",),
    ),
    Patch(
        "refused-removal-answers-ok",
        "a refused removal makes QUIT answer -ERR [SYS/TEMP] Some deleted messages were not removed",
        TRANSACTION,
        "                self.refuse(Refusal::NotRemoved);\n",
        '                self.ok("Logging out, messages deleted.");\n',
        (
            "tests/e2e/test_faults_upstream.py::test_refused_removal_makes_quit_fail",
            "tests/e2e/test_faults_upstream.py -k test_quit_faults_leave_what_quit_says",
        ),
    ),
    Patch(
        "refused-removal-keeps-flags",
        "after a refused removal popgate takes its \\Deleted flags back, so the next session can delete again",
        UPDATE,
        "    if removed.is_err() {\n",
        "    if removed.is_err() && false {\n",
        (
            "tests/e2e/test_faults_upstream.py::test_refused_expunge_takes_our_flags_back_for_the_next_session",
            "tests/e2e/test_faults_upstream.py::test_refused_expunge_can_be_retried_by_the_next_session",
        ),
    ),
    Patch(
        "no-uidplus-expunges-others",
        "without UIDPLUS, no EXPUNGE while other clients' messages carry \\Deleted",
        UPDATE,
        "    if !flagged.iter().all(|uid| deleted.binary_search(uid).is_ok()) {\n",
        "    if false && !flagged.iter().all(|uid| deleted.binary_search(uid).is_ok()) {\n",
        ("tests/e2e/test_faults_upstream.py::test_without_uidplus_other_deleted_flags_block_the_expunge",),
    ),
    Patch(
        "uidl-from-message-number",
        "UIDLs come from the UID (and match Dovecot's POP3), and do not move",
        MAILDROP,
        "                None => template.render(m.uid, folder.uid_validity, line),\n",
        "                None => template.render(\n"
        "                    self.messages.iter().position(|x| x.uid == m.uid).map_or(0, |i| i as u32 + 1),\n"
        "                    folder.uid_validity,\n"
        "                    line,\n"
        "                ),\n",
        (
            "tests/e2e/test_compat.py::test_uidl_default_is_dovecots_format",
            "tests/e2e/test_compat.py::test_uidls_match_dovecot_after_an_expunge",
            "tests/e2e/test_safety.py::test_message_expunged_elsewhere_answers_err_only_for_itself",
        ),
    ),
    Patch(
        "uidl-memory-drops-exceptions",
        "after a UIDVALIDITY change a message keeps the UIDL it was given, at every later login",
        "src/gateway/uidls.rs",
        "            match self.store.save(key, &a.memory, old.as_ref()).await {\n",
        "            let mut stored = a.memory.clone();\n"
        "            stored.exceptions.clear();\n"
        "            match self.store.save(key, &stored, old.as_ref()).await {\n",
        ("tests/e2e/test_uidl_memory.py -k test_uidvalidity_reset_downloads_nothing_again",),
    ),
    Patch(
        "no-login-penalty",
        "after failed logins, a login waits 1 s, 2 s, 4 s ... before its credentials are checked",
        GATE,
        "                    tokio::time::sleep(wait).await;\n",
        "                    let _ = wait;\n",
        (
            "tests/e2e/test_limits.py::test_failed_logins_slow_down_per_address_and_user_but_not_good_logins",
            "tests/e2e/test_login_gate.py::test_guessing_from_eight_addresses_runs_at_one_users_rate",
        ),
    ),
    Patch(
        "exclusive-not-enforced",
        "session.exclusive: true gives one session per user and answers a second login -ERR [IN-USE]",
        "src/gateway/limits.rs",
        "            per_user: Counter::new(if exclusive {\n",
        "            per_user: Counter::new(if exclusive && false {\n",
        ("tests/e2e/test_auth.py::test_exclusive_sessions_answer_in_use",),
    ),
    Patch(
        "master-separator-passed",
        "a login name holding auth.master_separator is refused before anything goes upstream",
        GATE,
        "                || (!separator.is_empty() && name.contains(separator)))\n",
        "                || (!separator.is_empty() && name.contains(separator) && false))\n",
        ("tests/e2e/test_login_gate.py::test_clients_cannot_name_the_master_user",),
    ),
    Patch(
        "apop-offered-without-tls",
        "APOP is offered (greeting timestamp) only under TLS or to auth.plaintext_networks",
        SESSION,
        "        s.timestamp = (s.ctx.credentials.is_some() && (s.plaintext_ok || s.conn.is_tls()))\n",
        "        s.timestamp = s.ctx.credentials.is_some()\n",
        ("tests/e2e/test_login_gate.py::test_digest_logins_are_offered_only_under_tls_or_to_trusted_networks",),
    ),
    Patch(
        "password-logged-on-failure",
        "passwords are never logged at any level",
        AUTHORIZATION,
        "            Err(LoginFailure::AuthFailed) => self.refuse_login(mechanism, &user, admitted).await,\n",
        "            Err(LoginFailure::AuthFailed) => {\n"
        "                if let Proof::Password { password, .. } = &proof {\n"
        '                    info!(password = %String::from_utf8_lossy(password.expose()), "wrong password");\n'
        "                }\n"
        "                self.refuse_login(mechanism, &user, admitted).await\n"
        "            }\n",
        ("tests/e2e/test_auth.py::test_no_secret_reaches_the_log",),
    ),
    Patch(
        "login-deadline-skips-sasl",
        "one login deadline for every read before login, SASL exchanges included",
        SESSION,
        "                Some(left) => match tokio::time::timeout(left, dispatch).await {\n",
        "                Some(left) => match tokio::time::timeout(left * 1000, dispatch).await {\n",
        ("tests/e2e/test_login_gate.py::test_the_login_deadline_covers_sasl_exchanges",),
    ),
    Patch(
        "stls-with-pipelined-input",
        "STLS with more input queued behind it is refused",
        AUTHORIZATION,
        "        if self.conn.has_pending_input() {\n",
        "        if self.conn.has_pending_input() && false {\n",
        (
            "tests/e2e/test_tls.py::test_commands_pipelined_behind_stls_are_not_run_inside_tls",
            "tests/e2e/test_tls.py::test_pipelined_bytes_never_reach_the_tls_layer",
        ),
    ),
    Patch(
        "bad-command-limit-raised",
        "twenty unparsable lines in a row close the connection",
        SESSION,
        "const MAX_BAD_COMMANDS: u32 = 20;\n",
        "const MAX_BAD_COMMANDS: u32 = 2000;\n",
        ("tests/e2e/test_robustness.py::test_twenty_unparsable_lines_in_a_row_close_the_connection",),
    ),
    Patch(
        "per-address-limit-on-balancer",
        "behind a PROXY balancer, the per-address connection limit counts the client's address",
        "src/listener.rs",
        "let (waiting, made_room) = ctx.limits.pre_login.enter(client.ip());",
        "let (waiting, made_room) = ctx.limits.pre_login.enter(peer.ip());",
        ("tests/e2e/test_limits.py::test_connections_per_address_count_the_proxied_client_not_the_balancer",),
    ),
    Patch(
        "unknown-proxy-client-trusted",
        "a PROXY header naming no client (UNKNOWN, LOCAL) is never trusted with plaintext passwords",
        SESSION,
        "        let plaintext_ok = origin.client_known\n            && ctx\n",
        "        let plaintext_ok = ctx\n",
        ("tests/e2e/test_login_gate.py::test_proxy_header_without_a_client_is_not_trusted_with_plaintext",),
    ),
    Patch(
        "apop-timestamp-repeats",
        "with a credentials file, the APOP timestamp is unique per connection",
        AUTHORIZATION,
        '    format!(\n        "<{session}.{nanos}.{:016x}@popgate>",\n        u64::from_be_bytes(nonce)\n    )\n',
        '    let _ = (session, nanos, nonce);\n    format!("<0.0.{:016x}@popgate>", 0u64)\n',
        ("tests/e2e/test_auth_bridge.py::test_apop_failures_and_unique_timestamps",),
    ),
    Patch(
        "oauth-refresh-per-login",
        "an access token is reused until shortly before expiry: 20 simultaneous logins cause one refresh",
        "src/oauth/broker.rs",
        "            return Ok(held.access.clone());\n        }\n        // Read again under the lock",
        "            let _ = held;\n        }\n        // Read again under the lock",
        ("tests/e2e/test_oauth_broker.py::test_twenty_simultaneous_logins_refresh_once",),
    ),
    Patch(
        "oauth-app-token-unchecked",
        "flow client_credentials: popgate checks the POP3 password before it hands out the application token",
        AUTHORIZATION,
        "if !self.password_matches(&user, password).await {",
        "if false && !self.password_matches(&user, password).await {",
        ("tests/e2e/test_oauth_app_token.py::test_wrong_and_unknown_passwords_never_get_the_app_token",),
    ),
    Patch(
        "oauth-refused-refresh-as-temporary",
        "a refresh token the server rejects answers -ERR [AUTH] with a text that says to enrol again",
        AUTHORIZATION,
        "let failure = if refused == Refused::Reenrol {",
        "let failure = if refused != Refused::Reenrol {",
        ("tests/e2e/test_oauth_broker.py::test_revoked_refresh_token_asks_to_enrol_again",),
    ),
    Patch(
        "oauth-token-stored-in-clear",
        "the stored file contains no token in clear",
        "src/oauth/enroll.rs",
        ".save_token(route, &user, &sealed)",
        ".save_token(route, &user, &[&sealed[..], refresh.expose()].concat())",
        ("tests/e2e/test_oauth_broker.py::test_the_store_and_the_log_hold_no_token",),
    ),
    Patch(
        "move-expunges-uncopied",
        "delete.action move: no message is removed that was not copied",
        UPDATE,
        "        transfer(backend, imap, set, folder, moves).await?;\n",
        "        let _ = transfer(backend, imap, set, folder, moves).await;\n",
        ("tests/e2e/test_delete_actions.py -k copy-uid-copy",),
    ),
    Patch(
        "flagged-still-listed",
        "delete.action flag: messages carrying the keyword are hidden from POP3",
        "src/gateway/login.rs",
        "        let hidden = ctx.config.delete.hiding_keyword();\n",
        "        let hidden = None;\n",
        ("tests/e2e/test_delete_actions.py -k test_flag_keeps",),
    ),
    Patch(
        "expire-takes-unretrieved",
        "EXPIRE removes only messages the session retrieved",
        UPDATE,
        "    out.retain(|uid| retrieved.binary_search(uid).is_ok());\n",
        "    out.retain(|uid| retrieved.binary_search(uid).is_ok());\n    out.extend(1..=8);\n",
        ("tests/e2e/test_policy.py -k test_expire_removes",),
    ),
    Patch(
        "retr-from-the-wrong-folder",
        "RETR and TOP fetch each message from its own folder",
        TRANSACTION,
        "        if *selected != Some(folder) {\n",
        "        if *selected != Some(folder) && false {\n",
        ("tests/e2e/test_folders.py -k test_keep_mode",),
    ),
    Patch(
        "cluster-lease-skipped",
        "with a Redis store, session.exclusive holds a user on every instance",
        "src/gateway/cluster.rs",
        "        if self.max_sessions == 0 {\n",
        "        if self.max_sessions < 2 {\n",
        ("tests/e2e/test_cluster.py -k test_an_exclusive_session_holds_the_user_on_every_instance",),
    ),
    Patch(
        "prelogin-counts-sessions",
        "logged-in sessions do not count against the per-address limit",
        AUTHORIZATION,
        "                self.waiting = None;\n",
        "",
        ("tests/e2e/test_limits.py -k test_connections_per_address_make_room",),
    ),
]
