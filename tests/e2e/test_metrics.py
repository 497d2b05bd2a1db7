"""What an SRE sees: metrics that move by the expected amounts after real
sessions, and readiness that follows the upstream and the drain."""

from __future__ import annotations

import re
import signal

from corpus import simple_message
from imaprelay import ImapRelay, Rule
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(pg: Popgate) -> dict[str, float]:
    """Samples keyed by name plus sorted labels, e.g. 'x{a="1",b="2"}'."""
    status, text = pg.http("/metrics")
    assert status == 200
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = ",".join(sorted((m.group(2) or "{}")[1:-1].split(","))) if m.group(2) else ""
            out[m.group(1) + ("{" + labels + "}" if labels else "")] = float(m.group(3))
    return out


def delta(before: dict, after: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)



def test_metrics_follow_real_sessions(dovecot, user):
    user.deliver(simple_message(1), simple_message(2))
    size = len(user.bodies()[user.uids()[0]])
    with Popgate(dovecot.imap_port, metrics=True) as pg:
        before = scrape(pg)
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, "wrong").startswith(b"-ERR [AUTH]")
            assert c.answer("QUIT").startswith(b"+OK")
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, user.password).startswith(b"+OK")
            c.answer("RETR 1")
            c.answer("TOP 2 0")
            c.answer("RETR 9")
            c.answer("DELE 2")
            assert c.answer("QUIT").startswith(b"+OK")
        with Pop3Raw(pg.port) as c:
            c.answer("NOOP")  # then drops without QUIT
        listener = f"pop3-{pg.port}"
        assert wait_for(lambda: scrape(pg).get(f'popgate_sessions_open{{listener="{listener}",tls="none"}}', 1) == 0)
        after = scrape(pg)

    d = lambda key: delta(before, after, key)  # noqa: E731
    assert d('popgate_logins_total{mechanism="USER",result="auth_failed"}') == 1
    assert d('popgate_logins_total{mechanism="USER",result="ok"}') == 1
    assert d('popgate_commands_total{command="RETR",result="ok"}') == 1
    assert d('popgate_commands_total{command="RETR",result="err"}') == 1
    assert d('popgate_commands_total{command="TOP",result="ok"}') == 1
    assert d('popgate_command_duration_seconds_count{command="RETR"}') == 2
    assert d('popgate_messages_sent_total{command="RETR"}') == 1
    assert d('popgate_messages_sent_total{command="TOP"}') == 1
    assert d("popgate_sent_message_bytes_total") > size
    assert d("popgate_messages_deleted_total") == 1
    assert d("popgate_quit_failures_total") == 0
    # Known label values exist from the start, at 0.
    assert before['popgate_logins_total{mechanism="PLAIN",result="in_use"}'] == 0
    assert d(f'popgate_sessions_total{{listener="{listener}",outcome="quit",tls="none"}}') == 2
    assert d(f'popgate_sessions_total{{listener="{listener}",outcome="client_disconnected",tls="none"}}') == 1
    assert d('popgate_commands_total{command="QUIT",result="ok"}') == 2
    assert d('popgate_commands_total{command="unparsable",result="err"}') == 0
    assert d("popgate_snapshot_messages_count") == 1
    assert d("popgate_snapshot_messages_sum") == 2
    assert d('popgate_upstream_connections_total{route="default"}') >= 2
    assert d('popgate_upstream_command_duration_seconds_count{command="UID EXPUNGE",route="default"}') == 1
    assert d('popgate_upstream_login_duration_seconds_count{route="default"}') == 1
    assert after['popgate_upstream_connections_open{route="default"}'] == 0
    assert after["popgate_connection_limit"] == 10000
    assert any(k.startswith("popgate_build_info{version=") for k in after)
    # No user names, addresses or secrets in any label.
    assert user.name not in " ".join(after) and "127.0.0.1" not in " ".join(after)


def test_quit_failure_and_outage_are_counted_and_readyz_follows(dovecot, user):
    user.deliver(simple_message(1))
    proxy = ImapRelay(dovecot.imap_port, Rule(r"^UID STORE .*\\Deleted", "refuse", every=True))
    port = proxy.port
    with Popgate(proxy.port, metrics=True, upstream_extra="  health_check_interval: 200ms\n") as pg:
        assert wait_for(lambda: pg.http("/readyz")[0] == 200)
        assert pg.http("/healthz") == (200, "ok\n")
        with Pop3Raw(pg.port) as c:
            c.login(user.name, user.password)
            c.answer("DELE 1")
            assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP]")
        # Counted once the session has said goodbye upstream.
        assert wait_for(lambda: scrape(pg).get('popgate_commands_total{command="QUIT",result="err"}') == 1)
        assert scrape(pg)["popgate_quit_failures_total"] == 1

        proxy.close()  # the upstream goes away
        assert wait_for(lambda: pg.http("/readyz")[0] == 503)
        assert "upstream" in pg.http("/readyz")[1]
        before = scrape(pg)
        assert before['popgate_upstream_up{route="default"}'] == 0
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, user.password).startswith(b"-ERR [SYS/TEMP]")
        after = scrape(pg)
        assert delta(before, after, 'popgate_logins_total{mechanism="USER",result="upstream_unavailable"}') == 1
        assert delta(before, after, 'popgate_upstream_failures_total{reason="connect",route="default"}') >= 1

        proxy = ImapRelay(dovecot.imap_port, port=port)  # and comes back
        assert wait_for(lambda: pg.http("/readyz")[0] == 200)
        assert scrape(pg)['popgate_upstream_up{route="default"}'] == 1
    proxy.close()
    assert user.uids()  # the refused removal left the message in place


def test_readyz_is_503_during_drain(dovecot, user):
    user.deliver(simple_message(1))
    pg = Popgate(
        dovecot.imap_port,
        metrics=True,
        upstream_extra="  health_check_interval: 200ms\n",
        extra="shutdown:\n  drain_timeout: 10s\n",
    )
    try:
        assert wait_for(lambda: pg.http("/readyz")[0] == 200)
        c = Pop3Raw(pg.port)
        c.login(user.name, user.password)
        pg.signal(signal.SIGTERM)
        assert wait_for(lambda: pg.http("/readyz") == (503, "not ready: draining: shutting down\n"))
        assert scrape(pg)["popgate_draining"] == 1
        assert c.answer("QUIT").startswith(b"+OK")
        assert pg.wait(15) == 0
    finally:
        pg.stop()
