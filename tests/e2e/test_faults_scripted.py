"""Upstream misbehaviour a real server cannot be made to show, played by a
scripted IMAP server: malformed and oversized lines, literals that lie about
their size or never end, BYE mid-fetch, bodies out of order or unasked for,
a server that never greets, and one that trickles a byte a second. popgate's
upstream timeout is set short; every stall must end within it."""

from __future__ import annotations

import threading

import pytest

from corpus import simple_message, to_crlf
from faultkit import Pop3Wire, closed_outcome, finished
from popgate import Popgate
from polling import wait_for
from scriptimap import ScriptedImap

BODIES = [to_crlf(simple_message(i)) for i in range(3)]
UPSTREAM = "  timeout: 2s\n  connect_timeout: 2s\n  health_check_interval: 60s\n"
# A stall is bounded by the upstream timeout, not by the trickle's length.


def gateway(server: ScriptedImap) -> Popgate:
    return Popgate(server.port, upstream_extra=UPSTREAM, metrics=True, extra="shutdown:\n  drain_timeout: 1s\n")


def read_all_then_quit(bodies_hook) -> ScriptedImap:
    """A session against a server answering body fetches with `bodies_hook`:
    RETR of every message must give exactly its body, then QUIT. Returns the
    (closed) server, to check what it was asked to do."""
    with ScriptedImap(BODIES, {"BODIES": bodies_hook}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"+OK")
        assert [c.retr(n) for n in (1, 2, 3)] == BODIES
        assert c.cmd("QUIT").startswith(b"+OK")
        finished(pg, c.port)
    return server


def untouched(server: ScriptedImap) -> None:
    """The IMAP side: nothing stored, nothing expunged."""
    assert server.sent(r"(?i)^UID (STORE|EXPUNGE)|^EXPUNGE") == []
    assert server.mailbox.expunged == []
    assert all(not f for f in server.mailbox.flags.values())


def no_panic(pg) -> None:
    log = pg.log_text()
    assert "panicked" not in log, log[-2000:]


def wait_closed(s) -> bool:
    """Blocks the script until popgate hangs up; answers nothing."""
    try:
        while s.sock.recv(4096):
            pass
    except OSError:
        pass
    return True


def login(pg, server) -> tuple[Pop3Wire, bytes]:
    c = Pop3Wire(pg.port)
    assert c.cmd("USER alice").startswith(b"+OK")
    return c, c.cmd("PASS secret")


def say(data: bytes, then: str = "answer"):
    """A hook that sends `data` (``TAG`` replaced by the command's tag),
    then goes on serving (`answer`), hangs up (`close`) or stalls (`stall`)."""

    def hook(s, tag, args):
        try:
            s.send(data.replace(b"TAG", tag))
        except OSError:
            pass
        if then == "close":
            s.sock.close()
        elif then == "stall":
            wait_closed(s)
        return True

    return hook


# Faults before or during login: PASS must get -ERR, with no command sent
# that changes anything.
LOGIN_FAULTS = {
    "never_greets": {"GREETING": say(b"", "stall")},
    "garbage_greeting": {"GREETING": say(b"\x00\xff\xfeHELLO garbage\r\n")},
    "bye_greeting": {"GREETING": say(b"* BYE Too many connections\r\n", "close")},
    "never_answers_login": {"AUTHENTICATE": say(b"", "stall"), "LOGIN": say(b"", "stall")},
    "malformed_listing": {"LISTING": say(b"* 1 FETCH (UID x RFC822.SIZE 5 FLAGS ())\r\nTAG OK done\r\n")},
    "oversized_listing_line": {
        "LISTING": say(b"* 1 FETCH (UID 1 RFC822.SIZE 5 FLAGS (" + b"\\Seen " * 400_000 + b"))\r\n", "stall")
    },
    "huge_literal_in_listing": {"LISTING": say(b"* 1 FETCH (UID 1 X-JUNK {99999999999999999999}\r\nTAG OK done\r\n")},
}


@pytest.mark.parametrize("fault", list(LOGIN_FAULTS))
def test_login_against_a_broken_server_answers_err(fault):
    with ScriptedImap(BODIES, LOGIN_FAULTS[fault]) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"-ERR"), answer
        c.sock.close()
        finished(pg, c.port)
        untouched(server)
        no_panic(pg)


# Faults while fetching bodies: RETR must not hand out a wrong or truncated
# message as complete, and nothing may be marked.
BODY_FAULTS = {
    "literal_never_ends": say(b"* 1 FETCH (UID 1 BODY[] {100000}\r\n" + BODIES[0][:10], "stall"),
    "bye_mid_fetch": say(b"* BYE Server shutting down\r\n", "close"),
    "closed_inside_literal": say(
        b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(BODIES[0]) + BODIES[0][: len(BODIES[0]) // 2], "close"
    ),
    "binary_garbage_mid_fetch": say(b"* 1 FETCH (UID 1 \x00\x01\x02 garbage \xff\r\nTAG OK done\r\n"),
}


@pytest.mark.parametrize("fault", list(BODY_FAULTS))
def test_broken_body_fetch_never_yields_a_complete_message(fault):
    with ScriptedImap(BODIES, {"BODIES": BODY_FAULTS[fault]}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"+OK")
        assert c.cmd("DELE 2").startswith(b"+OK")
        c.sock.sendall(b"RETR 1\r\n")
        got, closed = c.read_to_end()
        assert closed, got[-200:]
        assert not got.endswith(b"\r\n.\r\n"), got[-200:]
        finished(pg, c.port)
        untouched(server)


def test_body_missing_from_the_answer_is_an_err_and_the_session_goes_on():
    with ScriptedImap(BODIES, {"BODIES": say(b"TAG OK done\r\n")}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"+OK")
        assert c.retr(1) is None
        assert c.cmd("STAT").startswith(b"+OK 3 ")
        assert c.cmd("QUIT").startswith(b"+OK")
        finished(pg, c.port)
        untouched(server)
        no_panic(pg)


class Trickle:
    """A hook that sends `prefix` at once and then `slow` a byte a second,
    noting whether popgate still listened to the end; then it stalls."""

    def __init__(self, prefix: bytes, slow: bytes) -> None:
        self.prefix, self.slow = prefix, slow
        self.complete: bool | None = None
        self.ended = threading.Event()

    def __call__(self, s, tag, args) -> bool:
        if self.prefix:
            s.send(self.prefix)
        self.complete = s.trickle(self.slow)
        self.ended.set()
        return wait_closed(s)


# Each trickle lasts four times the timeout and more.
TRICKLES = {
    "greeting": ("GREETING", b"", b"* OK hi\r\n"),
    "body": ("BODIES", b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(BODIES[0]), BODIES[0][:9]),
}


@pytest.mark.parametrize("where", list(TRICKLES))
def test_a_trickle_of_a_byte_a_second_is_bounded_by_the_timeout(where):
    hook, prefix, slow = TRICKLES[where]
    trickle = Trickle(prefix, slow)
    with ScriptedImap(BODIES, {hook: trickle}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        if where == "body":
            assert answer.startswith(b"+OK")
            c.sock.sendall(b"RETR 1\r\n")
            got, closed = c.read_to_end()
            assert closed and not got.endswith(b"\r\n.\r\n")
        else:
            assert answer.startswith(b"-ERR"), answer
        c.sock.close()
        wait_for(trickle.ended.is_set, 90, "the trickle to end")
        assert trickle.complete is False  # popgate hung up first
        untouched(server)


def test_literal_shorter_than_the_message_is_passed_as_announced():
    """The literal's size is the truth on the wire: popgate sends what the
    server announced, never a wrong body for a later message, and marks
    nothing it was not told to."""
    short_literal = say(b"* 1 FETCH (UID 1 BODY[] {12}\r\n" + BODIES[0] + b")\r\nTAG OK done\r\n")
    with ScriptedImap(BODIES, {"BODIES": short_literal}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"+OK")
        try:
            first = c.retr(1)
            second = c.retr(2)
        except ConnectionError:
            first = second = "closed"
        assert first in (None, "closed", BODIES[0][:12] + b"\r\n")
        assert second in (None, "closed", BODIES[1])
        c.sock.close()
        finished(pg, c.port)
        untouched(server)
        no_panic(pg)


def test_unsolicited_flags_and_exists_during_a_fetch_are_ignored():
    def chatty(s, tag, args):
        out = b"* 2 FETCH (FLAGS (\\Seen))\r\n* 4 EXISTS\r\n* 1 RECENT\r\n"
        for uid in (1, 2, 3):
            out += s.fetch_item(uid) + b"* %d FETCH (FLAGS (\\Flagged))\r\n" % uid
        s.send(out + b"* OK [ALERT] noise\r\n" + tag + b" OK done\r\n")
        return True

    with ScriptedImap(BODIES, {"BODIES": chatty}) as server, gateway(server) as pg:
        c, answer = login(pg, server)
        assert answer.startswith(b"+OK")
        assert [c.retr(n) for n in (1, 2, 3)] == BODIES
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
        finished(pg, c.port)
        assert server.mailbox.expunged == [2]
        assert server.mailbox.flags[1] == {"\\Seen"} and server.mailbox.flags[3] == {"\\Seen"}
        no_panic(pg)


def test_bodies_in_another_order_are_matched_by_uid():
    def reversed_order(s, tag, args):
        from scriptimap import uid_set

        uids = [u for u in uid_set(args.split(" ")[0]) if u in s.mailbox.messages]
        s.send(b"".join(s.fetch_item(u) for u in reversed(uids)) + tag + b" OK done\r\n")
        return True

    server = read_all_then_quit(reversed_order)
    assert server.mailbox.expunged == []
    assert all(server.mailbox.flags[u] == {"\\Seen"} for u in (1, 2, 3))


def test_unsolicited_body_is_skipped():
    def with_stranger(s, tag, args):
        from scriptimap import uid_set

        stranger = b"Subject: not asked for\r\n\r\nhello\r\n"
        out = b"* 9 FETCH (UID 99 BODY[] {%d}\r\n" % len(stranger) + stranger + b")\r\n"
        uids = [u for u in uid_set(args.split(" ")[0]) if u in s.mailbox.messages]
        s.send(out + b"".join(s.fetch_item(u) for u in uids) + tag + b" OK done\r\n")
        return True

    server = read_all_then_quit(with_stranger)
    assert server.mailbox.expunged == []


def test_absurd_exists_count_does_not_take_the_gateway_down():
    absurd = say(b"* 4294967295 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\nTAG OK [READ-WRITE] selected\r\n")
    with ScriptedImap(BODIES, {"SELECT": absurd}) as server, gateway(server) as pg:
        c = Pop3Wire(pg.port)
        assert c.cmd("USER alice").startswith(b"+OK")
        try:
            c.cmd("PASS secret")  # -ERR or +OK: either way the gateway lives on
        except ConnectionError:
            pass
        c.sock.close()
        wait_for(lambda: pg.proc.poll() is not None or closed_outcome(pg, c.port), 30, "the session to end")
        assert pg.proc.poll() is None, pg.log_text()[-2000:]
        finished(pg, c.port)
        untouched(server)
