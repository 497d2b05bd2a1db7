"""Real POP3 clients (fetchmail, getmail6, mpop, curl, Python's poplib)
download a mailbox in keep and in delete mode.

Each case runs against Dovecot's own POP3 first, as the reference that
proves the client drivers in clients.py, and then through popgate in front
of Dovecot's IMAP. Every downloaded message must equal
``clients.normalise(client, BODY[])`` for the IMAP BODY[] of that message.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading

import pytest

import clients
from clients import CLIENTS, assert_fails, download, normalise
from corpus import CLIENT_MESSAGES as MESSAGES

HOST = "127.0.0.1"

# Spaces, both quote kinds, backslashes, braces, '#', '%', '$' and UTF-8.
PASSWORD = 'p w "q" \\ {x} #%$\'s \u00e4\u20ac'

# How each client reports a refused password (the server's -ERR text where
# the client shows it): any other failure (a timeout, a refused connection,
# a missing client) must not pass for it.
AUTH_FAILED = {
    "fetchmail": r"-ERR \[AUTH\] Authentication failed\.[\s\S]*status=3 \(AUTHFAIL\)",
    "getmail": r"POP error \(b'-ERR \[AUTH\] Authentication failed\.'\)",
    "mpop": r"authentication failed[\s\S]*-ERR \[AUTH\] Authentication failed\.",
    "curl": r"curl: \(67\) Login denied",
    "poplib": r"PASS failed: error_proto\(b'-ERR \[AUTH\] Authentication failed\.'\)",
}

LATE_MESSAGE = (b"From: late@example.org\n"
                b"Subject: arrives after the first download\n"
                b"Message-ID: <m6@clients.test>\n"
                b"\n"
                b"late\n")


SERVERS = ["dovecot-pop3", "popgate"]


@pytest.fixture
def pop3_port(request, dovecot, gateway):
    return dovecot.pop3_port if request.param == "dovecot-pop3" else gateway.port


def new_user(dovecot, name: str) -> str:
    dovecot.add_user(name, PASSWORD)
    for raw in MESSAGES:
        dovecot.deliver(name, raw)
    return name


def _message_id(raw: bytes) -> bytes | None:
    m = re.search(rb"^Message-ID:\s*(<[^>\r\n]*>)", raw, re.I | re.M)
    return m.group(1) if m else None


def _assert_downloaded(client: str, got: list[bytes], bodies: list[bytes]) -> None:
    """got must be exactly normalise(client, body) for each body, in order."""
    assert [_message_id(g) for g in got] == [_message_id(b) for b in bodies], (
        f"{client} downloaded other messages or in another order")
    for raw, body in zip(got, bodies):
        want = normalise(client, body)
        if raw != want:
            i = next((k for k, (a, b) in enumerate(zip(raw, want)) if a != b),
                     min(len(raw), len(want)))
            pytest.fail(
                f"{client}: {_message_id(body)!r} differs at byte {i} "
                f"(got {len(raw)} bytes, want {len(want)}):\n"
                f"  got  ...{raw[max(0, i - 40):i + 40]!r}\n"
                f"  want ...{want[max(0, i - 40):i + 40]!r}")


def _in_uid_order(bodies: dict[int, bytes]) -> list[bytes]:
    return [bodies[uid] for uid in sorted(bodies)]



@pytest.mark.parametrize("pop3_port", SERVERS, indirect=True)
@pytest.mark.parametrize("client", CLIENTS)
def test_keep_mode(dovecot, pop3_port, client, tmp_path):
    user = new_user(dovecot, f"{client}-keep-{pop3_port}")
    before = dovecot.bodies(user)
    assert len(before) == len(MESSAGES)

    got = download(client, HOST, pop3_port, user, PASSWORD, keep=True, workdir=tmp_path, timeout=30)
    _assert_downloaded(client, got, _in_uid_order(before))

    # The client's own UIDL state: a second run downloads nothing ...
    assert download(client, HOST, pop3_port, user, PASSWORD, keep=True, workdir=tmp_path, timeout=30) == []
    # ... and the mailbox is untouched.
    assert dovecot.bodies(user) == before

    # A message arriving later is the only one fetched next time.
    dovecot.deliver(user, LATE_MESSAGE)
    after = dovecot.bodies(user)
    new = [after[uid] for uid in sorted(set(after) - set(before))]
    assert len(new) == 1
    got = download(client, HOST, pop3_port, user, PASSWORD, keep=True, workdir=tmp_path, timeout=30)
    _assert_downloaded(client, got, new)
    assert dovecot.bodies(user) == after


@pytest.mark.parametrize("pop3_port", SERVERS, indirect=True)
@pytest.mark.parametrize("client", CLIENTS)
def test_delete_mode(dovecot, pop3_port, client, tmp_path):
    user = new_user(dovecot, f"{client}-delete-{pop3_port}")
    before = dovecot.bodies(user)
    got = download(client, HOST, pop3_port, user, PASSWORD, keep=False, workdir=tmp_path, timeout=30)
    _assert_downloaded(client, got, _in_uid_order(before))
    assert dovecot.bodies(user) == {}, "messages left after delete mode"
    assert download(client, HOST, pop3_port, user, PASSWORD, keep=False, workdir=tmp_path, timeout=30) == []


@pytest.mark.parametrize("pop3_port", SERVERS, indirect=True)
def test_wrong_password_raises(dovecot, pop3_port, tmp_path):
    user = new_user(dovecot, f"wrongpw-{pop3_port}")

    def run(client):
        assert_fails(client, "failed", AUTH_FAILED[client], lambda: download(
            client, HOST, pop3_port, user, "not the password", keep=True, workdir=tmp_path / client, timeout=20))

    with concurrent.futures.ThreadPoolExecutor(len(CLIENTS)) as pool:
        for f in [pool.submit(run, c) for c in CLIENTS]:
            f.result()
    assert len(dovecot.bodies(user)) == len(MESSAGES)


def test_silent_server_times_out(tmp_path):
    """A server that accepts and never greets: every client gives up."""
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    def run(client):
        # Either the client's own timeout fires or the harness stops it:
        # both are the client giving up on the silent server, nothing else.
        assert_fails(client, ("timeout", "failed"), r"(?i)time ?out|timed out", lambda: download(
            client, HOST, port, "nobody", "x", keep=True, workdir=tmp_path / client, timeout=2))

    try:
        with concurrent.futures.ThreadPoolExecutor(len(CLIENTS)) as pool:
            for f in [pool.submit(run, c) for c in CLIENTS]:
                f.result()
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def test_normalise():
    body = b"A: b\r\n\r\nx\r\n.\r\nlast"
    wire = b"A: b\r\n\r\nx\r\n.\r\nlast\r\n"
    for client in ("fetchmail", "mpop", "curl", "poplib"):
        assert normalise(client, body) == wire
    assert clients.wire_form(b"a\nb") == b"a\r\nb\r\n"
    got = normalise("getmail", b"Subject: s\r\nReturn-Path: <r@x>\r\n\r\nbody")
    assert got == b"Return-Path: <r@x>\nSubject: s\n\nbody\n"
    with pytest.raises(ValueError):
        normalise("thunderbird", body)
