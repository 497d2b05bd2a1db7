"""Logins: USER/PASS and SASL PLAIN/LOGIN with awkward passwords, the
RESP-CODES on failure, and no secret in the logs at any level."""

from __future__ import annotations

import base64
import json
import poplib

import pytest

from corpus import simple_message
from pop3raw import Pop3Raw
from popgate import Popgate

AWKWARD = [
    "two  spaces and trailing ",
    'dq"uo\'te',
    "back\\slash\\",
    "{braces}{PLAIN}",
    "ütf-8 ✓ 密码",
    " leading",
]


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user: str, password: str) -> str:
    """An AUTH PLAIN response: empty authzid, user, password."""
    return b64("\0".join(["", user, password]))


@pytest.fixture(scope="module")
def trace_gateway(dovecot):
    """popgate logging at the most verbose level, to look for secrets."""
    with Popgate(dovecot.imap_port, env={"RUST_LOG": "trace"}) as pg:
        yield pg


@pytest.mark.parametrize("password", AWKWARD)
def test_awkward_passwords_log_in_every_way(dovecot, trace_gateway, password):
    name = f"pw{AWKWARD.index(password)}"
    dovecot.add_user(name, password)
    dovecot.deliver(name, simple_message(1))
    port = trace_gateway.port

    p = poplib.POP3("127.0.0.1", port, timeout=10)
    p.user(name)
    p._putcmd("PASS " + password)  # poplib would encode as Latin-1
    assert p._getresp().startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()

    with Pop3Raw(port) as c:  # SASL PLAIN with an initial response
        assert c.answer(f"AUTH PLAIN {plain(name, password)}").startswith(b"+OK")
        assert c.answer("STAT").startswith(b"+OK 1 ")
    with Pop3Raw(port) as c:  # SASL PLAIN after a "+ " continuation, as curl does
        c.send("AUTH PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        assert c.answer(plain(name, password)).startswith(b"+OK")
    with Pop3Raw(port) as c:  # SASL LOGIN
        c.send("AUTH LOGIN\r\n")
        assert c.line() == b"+ VXNlcm5hbWU6\r\n"
        c.send(b64(name) + "\r\n")
        assert c.line() == b"+ UGFzc3dvcmQ6\r\n"
        assert c.answer(b64(password)).startswith(b"+OK")


def test_wrong_password_is_auth_and_session_may_retry(dovecot, gateway, user):
    with Pop3Raw(gateway.port) as c:
        assert c.login(user.name, "wrong").startswith(b"-ERR [AUTH] ")
        assert c.answer(f"AUTH PLAIN {plain(user.name, 'nope')}").startswith(b"-ERR [AUTH] ")
        assert c.login(user.name, user.password).startswith(b"+OK")


def test_sasl_errors(gateway):
    with Pop3Raw(gateway.port) as c:
        assert c.answer("AUTH") == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        assert c.answer("AUTH CRAM-MD5").startswith(b"-ERR")
        c.send("AUTH PLAIN\r\n")
        c.line()
        assert c.answer("*").startswith(b"-ERR")  # cancelled
        assert c.answer("AUTH PLAIN !!notbase64").startswith(b"-ERR")
        assert c.answer(f"AUTH PLAIN {b64('no-nuls')}").startswith(b"-ERR")
        assert c.answer("NOOP").startswith(b"+OK")


def test_capa_advertises_what_is_honoured(gateway):
    with Pop3Raw(gateway.port) as c:
        capa = c.answer("CAPA").decode().split("\r\n")
    for cap in ["TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]:
        assert cap in capa
    assert any(c.startswith("IMPLEMENTATION popgate") for c in capa)
    assert not any(c.startswith(("STLS", "APOP", "SASL CRAM")) for c in capa)


def test_unreachable_upstream_is_sys_temp(user):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()  # nothing listens here now
    with Popgate(dead_port) as pg, Pop3Raw(pg.port) as c:
        assert c.login(user.name, user.password).startswith(b"-ERR [SYS/TEMP] ")
        assert "cannot connect to upstream" in pg.log_text()


def test_exclusive_sessions_answer_in_use(dovecot, user):
    with Popgate(dovecot.imap_port, extra="session:\n  exclusive: true\n") as pg:
        with Pop3Raw(pg.port) as first:
            assert first.login(user.name, user.password).startswith(b"+OK")
            with Pop3Raw(pg.port) as second:
                assert second.login(user.name, user.password).startswith(b"-ERR [IN-USE] ")
            first.answer("QUIT")
        with Pop3Raw(pg.port) as third:
            assert third.login(user.name, user.password).startswith(b"+OK")


def escaped_forms(secret: str) -> set[str]:
    """The ways a secret could be written into a log line: as it is, and as
    Rust's Debug, JSON, IMAP quoting, base64 and hex would write it."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms.add(secret.replace("\\", "\\\\").replace('"', '\\"'))  # Rust Debug, IMAP quoted
    forms.add("".join(c if c.isprintable() and ord(c) < 128 else f"\\u{{{ord(c):x}}}" for c in secret))
    forms.add(b64(secret))
    forms.add(secret.encode().hex())
    forms.add(secret.strip())
    return {f for f in forms if len(f) >= 6}


def test_no_secret_reaches_the_log(dovecot):
    """Every login path, right and wrong passwords, at trace level: neither
    the passwords nor the SASL payloads appear in any form."""
    secrets: set[str] = set()
    with Popgate(dovecot.imap_port, log_level="trace") as pg:
        for i, password in enumerate(AWKWARD):
            name = f"secret-log-{i}"
            dovecot.add_user(name, password)
            wrong = f"wrong {password} {i}"
            payloads = [plain(name, password), plain(name, wrong), b64(password), b64(wrong),
                        b64("\0".join([name, name, password]))]
            secrets |= escaped_forms(password) | escaped_forms(wrong) | set(payloads)
            with Pop3Raw(pg.port) as c:
                assert c.login(name, wrong).startswith(b"-ERR [AUTH]")
                assert c.login(name, password).startswith(b"+OK")
            with Pop3Raw(pg.port) as c:
                assert c.answer(f"AUTH PLAIN {payloads[1]}").startswith(b"-ERR [AUTH]")
                assert c.answer(f"AUTH PLAIN {payloads[0]}").startswith(b"+OK")
            with Pop3Raw(pg.port) as c:
                c.send("AUTH LOGIN\r\n")
                assert c.line() == b"+ VXNlcm5hbWU6\r\n"
                c.send(b64(name) + "\r\n")
                assert c.line() == b"+ UGFzc3dvcmQ6\r\n"
                assert c.answer(payloads[2]).startswith(b"+OK")
        log = pg.log_text()
    # The log is verbose enough to have shown a secret had one been kept.
    assert "logged in" in log and "DEBUG" in log and "login refused" in log
    leaked = sorted(s for s in secrets if s in log)
    assert not leaked, f"secrets in the log: {leaked!r}"
