"""`client_workarounds` changes exactly the documented bytes, and only when
listed, and `session.max_messages` shows only the newest messages.

Dovecot's IMAP already sends NUL bytes as 0x80, so the NUL case needs the
scripted IMAP server; the rest runs against the real Dovecot."""

from __future__ import annotations

import pytest

from corpus import simple_message
from pop3raw import Pop3Raw
from popgate import Popgate
from scriptimap import ScriptedImap

NUL_BODY = b"Subject: nul\r\nFrom: a@example.org\r\n\r\nbefore\x00after\r\n\x00\r\n"
HEADER_ONLY = b"Subject: no body\nFrom: a@example.org\n"


def _retr_and_top(port: int, user: str, password: str) -> tuple[bytes, bytes]:
    with Pop3Raw(port) as c:
        assert c.login(user, password).startswith(b"+OK")
        retr, top = c.answer("RETR 1"), c.answer("TOP 1 5")
        assert c.answer("QUIT").startswith(b"+OK")
    return retr, top


@pytest.mark.parametrize("enabled", [False, True])
def test_outlook_no_nuls_sends_nul_as_0x80(enabled):
    extra = "client_workarounds: [outlook-no-nuls]\n" if enabled else ""
    with ScriptedImap([NUL_BODY]) as server, Popgate(server.port, extra=extra) as pg:
        with Pop3Raw(pg.port) as c:
            assert c.login("alice", "secret").startswith(b"+OK")
            size = len(NUL_BODY)
            assert c.answer("LIST 1") == b"+OK 1 %d\r\n" % size
            retr = c.answer("RETR 1")
            top = c.answer("TOP 1 1")
            assert c.answer("QUIT").startswith(b"+OK")
    want = NUL_BODY.replace(b"\x00", b"\x80") if enabled else NUL_BODY
    assert retr == b"+OK %d octets\r\n" % size + want + b".\r\n"
    head, body = want.split(b"\r\n\r\n", 1)
    assert top == b"+OK\r\n" + head + b"\r\n\r\n" + body.split(b"\r\n")[0] + b"\r\n.\r\n"


@pytest.mark.parametrize("enabled", [False, True])
def test_oe_ns_eoh_ends_a_bodyless_header_with_an_empty_line(dovecot, user, enabled):
    user.deliver(HEADER_ONLY, simple_message(1))
    header = b"Subject: no body\r\nFrom: a@example.org\r\n"
    extra = "client_workarounds: [oe-ns-eoh]\n" if enabled else ""
    with Popgate(dovecot.imap_port, extra=extra) as pg, user.pop3(pg.port) as c:
        top0, top3, retr = c.answer("TOP 1 0"), c.answer("TOP 1 3"), c.answer("RETR 1")
        other = c.answer("TOP 2 0")
        assert c.answer("QUIT").startswith(b"+OK")
    added = b"\r\n" if enabled else b""
    assert top0 == b"+OK\r\n" + header + added + b".\r\n"
    assert top3 == b"+OK\r\n" + header + added + b".\r\n"
    # RETR is never changed, nor TOP of a message whose header ends.
    assert retr == b"+OK %d octets\r\n" % len(header) + header + b".\r\n"
    assert other.endswith(b"\r\n\r\n.\r\n") and not other.endswith(b"\r\n\r\n\r\n.\r\n")


def test_workarounds_off_match_dovecots_own_pop3(dovecot, user):
    user.deliver(HEADER_ONLY)
    with Popgate(dovecot.imap_port) as pg:
        ours = _retr_and_top(pg.port, user.name, user.password)
    theirs = _retr_and_top(dovecot.pop3_port, user.name, user.password)
    assert ours == theirs


def test_unknown_workaround_names_the_key(dovecot):
    pg = Popgate(dovecot.imap_port, extra="client_workarounds: [outlook-no-nul]\n", start=False)
    try:
        with pytest.raises(RuntimeError) as e:
            pg.start()
        assert "client_workarounds" in str(e.value) and "outlook-no-nuls" in str(e.value)
    finally:
        pg.cleanup()
