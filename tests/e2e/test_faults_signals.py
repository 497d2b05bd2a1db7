"""SIGKILL and SIGTERM of popgate at every point of a session. The relay
holds the chosen IMAP command (or the server's reply to it) so the signal
lands exactly there; the mailbox then holds what the server had done by
that point and nothing more."""

from __future__ import annotations

import signal

import pytest

from corpus import large_attachment, simple_message
from faultkit import Pop3Wire, deleted, seen, state
from imaprelay import ImapRelay, Rule
from polling import wait_for
from popgate import Popgate

BODY = r"^UID FETCH \S+ \(UID BODY"
STORE_SEEN = r"^UID STORE .*\\Seen"
STORE_DELETED = r"^UID STORE .*\\Deleted"
EXPUNGE = r"^UID EXPUNGE "


def gateway(port: int, drain: str = "1s") -> Popgate:
    return Popgate(
        port,
        upstream_extra="  timeout: 20s\n  health_check_interval: 60s\n",
        extra=f"shutdown:\n  drain_timeout: {drain}\n",
    )


def mailbox(user):
    user.deliver(simple_message(0), large_attachment(500_000), simple_message(2))
    return state(user.dv, user.name)


def start_quit(pg, user) -> Pop3Wire:
    """RETR 1, DELE 2, then QUIT without waiting for its answer."""
    c = Pop3Wire(pg.port)
    c.login(user.name, user.password)
    c.retr_dele_quit()
    return c


# point: (rule or None, how far the server got: "nothing", "seen", "flagged", "expunged")
KILL_POINTS = {
    "idle_after_dele": (None, "nothing"),
    "inside_retr": (Rule(BODY, "hold_reply", after=100_000), "nothing"),
    "store_seen_not_sent": (Rule(STORE_SEEN, "hold"), "nothing"),
    "store_deleted_not_sent": (Rule(STORE_DELETED, "hold"), "seen"),
    "store_deleted_done": (Rule(STORE_DELETED, "hold_before_done"), "flagged"),
    "expunge_not_sent": (Rule(EXPUNGE, "hold"), "flagged"),
    "expunge_done": (Rule(EXPUNGE, "hold_before_done"), "expunged"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_leaves_what_the_server_had_done(dovecot, user, point):
    before = mailbox(user)
    u = sorted(before)
    rule, reached = KILL_POINTS[point]
    with ImapRelay(dovecot.imap_port, *([rule] if rule else [])) as relay:
        pg = gateway(relay.port)
        try:
            if point == "idle_after_dele":
                c = Pop3Wire(pg.port)
                c.login(user.name, user.password)
                assert c.cmd("DELE 2").startswith(b"+OK")
                assert c.cmd("DELE 3").startswith(b"+OK")
            elif point == "inside_retr":
                c = Pop3Wire(pg.port)
                c.login(user.name, user.password)
                assert c.cmd("DELE 1").startswith(b"+OK")
                c.sock.sendall(b"RETR 2\r\n")
                assert c.read_at_least(100).startswith(b"+OK")
            else:
                c = start_quit(pg, user)
            event = rule.done if rule and rule.action.endswith("_before_done") else rule and rule.fired
            if event:
                wait_for(event.is_set, 30, "the relay to hold the chosen point")
            pg.signal(signal.SIGKILL)
            assert pg.wait(30) == -signal.SIGKILL
            _, closed = c.read_to_end()
            assert closed
            # popgate is gone and the held command never reached the
            # server (or was already done): the state is final.
            after = state(dovecot, user.name)
        finally:
            pg.stop()
    expect = {uid: entry for uid, entry in before.items()}
    if reached in ("seen", "flagged", "expunged"):
        expect[u[0]] = (frozenset({"\\Seen"}), before[u[0]][1])
    if reached == "flagged":
        expect[u[1]] = (frozenset({"\\Deleted"}), before[u[1]][1])
    if reached == "expunged":
        del expect[u[1]]
    assert after == expect


def test_sigterm_mid_retr_removes_nothing(dovecot, user):
    before = mailbox(user)
    rule = Rule(BODY, "hold_reply", after=100_000)
    with ImapRelay(dovecot.imap_port, rule) as relay:
        pg = gateway(relay.port)
        try:
            c = Pop3Wire(pg.port)
            c.login(user.name, user.password)
            assert c.cmd("DELE 1").startswith(b"+OK")
            c.sock.sendall(b"RETR 2\r\n")
            assert c.read_at_least(100).startswith(b"+OK")
            pg.signal(signal.SIGTERM)
            assert pg.wait(60) == 0
            got, closed = c.read_to_end()
            assert closed and not got.endswith(b"\r\n.\r\n")
            after = state(dovecot, user.name)
        finally:
            pg.stop()
    assert after == before
    assert "drain time over" in pg.log_text()


def test_sigterm_idle_session_removes_nothing(dovecot, user):
    before = mailbox(user)
    with ImapRelay(dovecot.imap_port) as relay:
        pg = gateway(relay.port)
        try:
            c = Pop3Wire(pg.port)
            c.login(user.name, user.password)
            assert c.cmd("RETR 1").startswith(b"+OK")
            c.skip_body()
            assert c.cmd("DELE 2").startswith(b"+OK")
            pg.signal(signal.SIGTERM)
            assert pg.wait(60) == 0
            got, closed = c.read_to_end()
            assert closed and b"BYE" not in got
            after = state(dovecot, user.name)
        finally:
            pg.stop()
    assert after == before


def test_sigterm_during_quit_lets_the_update_finish(dovecot, user):
    before = mailbox(user)
    u = sorted(before)
    rule = Rule(STORE_DELETED, "hold")
    with ImapRelay(dovecot.imap_port, rule) as relay:
        pg = gateway(relay.port, drain="20s")
        try:
            c = start_quit(pg, user)
            wait_for(rule.fired.is_set, 30, "the \\Deleted store to be held")
            pg.signal(signal.SIGTERM)
            wait_for(lambda: "no longer accepting" in pg.log_text(), 30, "the drain to begin")
            relay.release()
            assert c.line().startswith(b"+OK")
            assert pg.wait(60) == 0
        finally:
            pg.stop()
    after = state(dovecot, user.name)
    assert sorted(after) == [u[0], u[2]]
    assert seen(after) == [u[0]] and deleted(after) == []


def test_sigterm_then_quit_within_the_drain_applies_the_marks(dovecot, user):
    before = mailbox(user)
    u = sorted(before)
    with ImapRelay(dovecot.imap_port) as relay:
        pg = gateway(relay.port, drain="20s")
        try:
            c = Pop3Wire(pg.port)
            c.login(user.name, user.password)
            assert c.cmd("DELE 3").startswith(b"+OK")
            pg.signal(signal.SIGTERM)
            wait_for(lambda: "no longer accepting" in pg.log_text(), 30, "the drain to begin")
            assert c.cmd("QUIT").startswith(b"+OK")
            assert pg.wait(60) == 0
        finally:
            pg.stop()
    after = state(dovecot, user.name)
    assert sorted(after) == u[:2]
    assert after[u[0]] == before[u[0]] and after[u[1]] == before[u[1]]
