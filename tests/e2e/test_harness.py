"""The harness checked against Dovecot's own IMAP and POP3.

These tests involve no popgate: they prove that the Dovecot instance, the
delivery helpers and the test corpus behave as the gateway tests assume.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from corpus import (  # noqa: E402
    large_attachment, retr_wire, simple_message, to_crlf, tricky_corpus,
    tricky_messages,
)
from dovecot import Dovecot, DovecotError, free_port, tls_conf  # noqa: E402

poplib._MAXLINE = 1 << 20

# Spaces (leading, inner, trailing), quotes, backslashes, braces, a scheme
# look-alike, '%' and UTF-8.  No ':' (passwd-file separator).
WEIRD_PASSWORD = ' p a"s\'s\\w{o}r{SHA}d %u ü€😀 '
ASCII_WEIRD_PASSWORD = 'q"u\'o\\te {br} %d sp  ace'


USERS = {
    "alice": "secret", "bob": "bobpw", "tricky": "trickypw",
    "flagger": "pw", "bulk": "pw", "big": "pw",
}


@pytest.fixture(scope="module")
def dv():
    with Dovecot(users=USERS) as d:
        yield d


def pop3(d: Dovecot, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(d.host, d.pop3_port, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def raw_retr(d: Dovecot, user: str, password: str, n: int) -> tuple[bytes, bytes]:
    """RETR over a plain socket: (+OK line, exact payload incl. final dot)."""
    with socket.create_connection((d.host, d.pop3_port), timeout=30) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"+OK")
        for cmd in (b"USER " + user.encode(), b"PASS " + password.encode()):
            f.write(cmd + b"\r\n")
            f.flush()
            assert f.readline().startswith(b"+OK")
        f.write(b"RETR %d\r\n" % n)
        f.flush()
        status = f.readline()
        payload = b""
        while not payload.endswith(b"\r\n.\r\n"):
            line = f.readline()
            assert line, "connection closed in RETR"
            payload += line
        f.write(b"QUIT\r\n")
        f.flush()
        return status, payload


def test_instance_basics(dv: Dovecot):
    assert dv.host == "127.0.0.1"
    assert dv.running()
    assert dv.imap_port != dv.pop3_port
    assert len(dv.base_dir) < 80
    assert "starting up for imap, pop3" in dv.log_text()
    assert dv.log_path.startswith(dv.dir)
    c = dv.imap("alice")
    try:
        typ, caps = c.capability()
        assert typ == "OK" and b"UIDPLUS" in caps[0]
    finally:
        c.logout()


def test_tricky_corpus_through_dovecot_pop3(dv: Dovecot):
    user = "tricky"
    corpus = tricky_corpus()
    for _name, raw in corpus:
        dv.deliver(user, raw)

    uids = dv.uids(user)
    assert len(uids) == len(corpus)
    bodies = dv.bodies(user)
    sizes = dv.sizes(user)
    # Delivery order is UID order; BODY[] is the stored message with CRLF.
    for uid, (name, raw) in zip(uids, corpus):
        assert bodies[uid] == to_crlf(raw), name
        assert sizes[uid] == len(bodies[uid]), name

    p = pop3(dv, user, "trickypw")
    try:
        count, total = p.stat()
        assert count == len(uids)
        assert total == sum(sizes.values())
        _, listing, _ = p.list()
        octets = [int(line.split()[1]) for line in listing]
        assert octets == [sizes[u] for u in uids]
        # pop3_uidl_format = %08Xu%08Xv
        validity = dv.uid_validity(user)
        _, uidl, _ = p.uidl()
        assert [line.split()[1].decode() for line in uidl] == [
            f"{u:08x}{validity:08x}" for u in uids]
        for n, uid in enumerate(uids, start=1):
            _, lines, _ = p.retr(n)
            expect = bodies[uid]
            if not expect.endswith(b"\r\n"):
                expect += b"\r\n"
            assert b"\r\n".join(lines) + b"\r\n" == expect, corpus[n - 1][0]
    finally:
        p.quit()

    # Byte-exact wire format, dot-stuffing included.
    for n, uid in enumerate(uids, start=1):
        status, payload = raw_retr(dv, user, "trickypw", n)
        assert status.startswith(b"+OK %d octets" % sizes[uid])
        assert payload == retr_wire(bodies[uid]), corpus[n - 1][0]


def test_corpus_shape():
    msgs = tricky_messages()
    assert 9 <= len(msgs) <= 14
    for raw in msgs:
        head = raw.split(b"\n\n", 1)[0].replace(b"\r", b"")
        for h in (b"From:", b"To:", b"Subject:", b"Date:", b"Message-ID:"):
            assert h in head
    names = dict(tricky_corpus())
    assert b"\n.\n" in names["lone-dot"]
    assert b"\r\n" in names["crlf"]
    assert sum(b"\r\n" in m for m in msgs) == 1
    assert not names["no-final-newline"].endswith(b"\n")
    assert names["empty-body"].endswith(b"\n\n")
    assert b"\n\n" not in names["header-only"]
    assert names["dot-at-end"].endswith(b"\n.\n")
    folded = names["folded-header"].split(b"\n\n", 1)[0]
    assert len(folded) > 1000 and folded.count(b"\n\t") >= 5
    assert b"\xe9" in names["8bit"] and "ü".encode() in names["8bit"]
    big = large_attachment()
    assert abs(len(big) - 2_000_000) < 200
    assert large_attachment(10_000) == large_attachment(10_000)


def test_weird_password_imap_and_pop3(dv: Dovecot):
    # Added while Dovecot runs.
    dv.add_users({"weird": WEIRD_PASSWORD, "weirdascii": ASCII_WEIRD_PASSWORD})
    # IMAP: AUTHENTICATE PLAIN for the UTF-8 one, quoted LOGIN for ASCII.
    for user in ("weird", "weirdascii"):
        c = dv.imap(user)
        c.logout()
    c = imaplib.IMAP4(dv.host, dv.imap_port)
    c.login("weirdascii", ASCII_WEIRD_PASSWORD)
    c.logout()
    # POP3: PASS takes the rest of the line, spaces included.
    for user, pw in (("weird", WEIRD_PASSWORD), ("weirdascii", ASCII_WEIRD_PASSWORD)):
        p = pop3(dv, user, pw)
        assert p.stat() == (0, 0)
        p.quit()
    with pytest.raises(poplib.error_proto):
        pop3(dv, "weird", WEIRD_PASSWORD.strip())
    with pytest.raises(ValueError):
        dv.add_user("colon", "a:b")
    with pytest.raises(ValueError):
        dv.add_user("tab", "a\tb")


def test_add_change_remove_user(dv: Dovecot):
    dv.add_user("newbie", "first")                 # new: usable at once
    dv.imap("newbie").logout()
    dv.add_user("newbie", "second pw")             # changed: next second
    dv.imap("newbie").logout()
    with pytest.raises(imaplib.IMAP4.error):
        dv.imap("newbie", "first")
    dv.remove_user("newbie")
    with pytest.raises(imaplib.IMAP4.error):
        dv.imap("newbie", "second pw")
    # Odd names map to plain files ("u-.."), so they are just unknown users.
    c = imaplib.IMAP4(dv.host, dv.imap_port)
    for odd in ("..", "u-alice"):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            c.login(odd, "x")
    c.logout()


def test_master_user(dv: Dovecot):
    dv.deliver("alice", simple_message(1))
    # LOGIN alice*master
    c = imaplib.IMAP4(dv.host, dv.imap_port)
    c.login(f"alice*{dv.master_user}", dv.master_password)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) >= 1
    c.logout()
    # AUTHENTICATE PLAIN, authzid=alice, authcid=master
    c = dv.imap_master("alice", authzid=True)
    typ, data = c.uid("SEARCH", "ALL")
    assert typ == "OK" and data[0]
    c.logout()
    c = dv.imap_master("alice")
    c.logout()
    # Wrong master password, and a target user that does not exist.
    c = imaplib.IMAP4(dv.host, dv.imap_port)
    with pytest.raises(imaplib.IMAP4.error):
        c.login(f"alice*{dv.master_user}", "wrong")
    with pytest.raises(imaplib.IMAP4.error):
        c.login(f"nosuchuser*{dv.master_user}", dv.master_password)
    c.logout()
    # The master user through Dovecot's POP3 as well.
    p = pop3(dv, f"alice*{dv.master_user}", dv.master_password)
    assert p.stat()[0] >= 1
    p.quit()


def test_flags_and_expunge(dv: Dovecot):
    user = "flagger"
    dv.deliver(user, simple_message(1))
    dv.deliver(user, simple_message(2), flags="S")
    dv.deliver(user, simple_message(3), flags="TS")
    dv.deliver(user, simple_message(4))
    u1, u2, u3, u4 = dv.uids(user)
    fl = dv.flags(user)
    assert fl[u1] == set()
    assert fl[u2] == {"\\Seen"}
    assert fl[u3] == {"\\Seen", "\\Deleted"}

    dv.set_flags(user, u1, "\\Deleted")          # another client marks it
    assert dv.flags(user)[u1] == {"\\Deleted"}
    dv.set_flags(user, u1, ["\\Deleted"], op="-")
    assert dv.flags(user)[u1] == set()
    dv.set_flags(user, u4, ["\\Flagged", "\\Seen"], op="")
    assert dv.flags(user)[u4] == {"\\Flagged", "\\Seen"}

    dv.expunge_uid(user, u2)                       # only u2 goes
    assert dv.uids(user) == [u1, u3, u4]
    assert dv.flags(user)[u3] == {"\\Seen", "\\Deleted"}

    p = pop3(dv, user, "pw")
    assert p.stat()[0] == 3
    p.quit()


def test_deliver_many_keeps_order(dv: Dovecot):
    user = "bulk"
    n = 3000
    dv.deliver_many(user, (simple_message(i) for i in range(n)))
    uids = dv.uids(user)
    assert len(uids) == n
    p = pop3(dv, user, "pw")
    try:
        assert p.stat()[0] == n
        for k in (1, 2, n // 2, n):
            _, lines, _ = p.top(k, 0)
            assert f"Subject: Message {k - 1}".encode() in lines
    finally:
        p.quit()


def test_large_attachment_retr(dv: Dovecot):
    user = "big"
    raw = large_attachment(2_000_000)
    dv.deliver(user, raw)
    (uid,) = dv.uids(user)
    assert dv.sizes(user)[uid] == len(to_crlf(raw))
    p = pop3(dv, user, "pw")
    try:
        _, lines, octets = p.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == to_crlf(raw)
    finally:
        p.quit()


def test_append_and_unknown_user(dv: Dovecot):
    dv.append("bob", simple_message(42), flags="\\Seen")
    fl = dv.flags("bob")
    assert list(fl.values())[-1] == {"\\Seen"}
    with pytest.raises(DovecotError):
        dv.imap("nobody-here")


def test_lifecycle_and_cleanup():
    d = Dovecot(users={"x": "y"}, start=False)
    assert not d.running()
    d.start()
    pid = d.proc.pid
    port = d.imap_port
    d.deliver("x", simple_message(0))
    assert len(d.uids("x")) == 1
    d.stop()
    assert not d.running()
    assert not os.path.exists(d.dir)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection((d.host, port), timeout=1).close()
    d.stop()  # idempotent


def test_extra_conf_and_startup_error():
    # A broken setting makes start() fail fast with the log in the message.
    with pytest.raises(DovecotError) as exc:
        Dovecot(users={"x": "y"}, extra_conf="no_such_setting = 1\n")
    assert "no_such_setting" in str(exc.value)
    # A valid extra setting is honoured.
    with Dovecot(users={"x": "y"},
                 extra_conf='login_greeting = popgate test ready\n') as d:
        with socket.create_connection((d.host, d.pop3_port), timeout=5) as s:
            assert b"popgate test ready" in s.recv(200)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_hook(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
         "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    imaps, pop3s = free_port(), free_port()
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with Dovecot(users={"t": "pw"},
                 extra_conf=tls_conf(str(cert), str(key), imaps, pop3s)) as d:
        c = imaplib.IMAP4_SSL(d.host, imaps, ssl_context=ctx)
        c.login("t", "pw")
        c.logout()
        p = poplib.POP3_SSL(d.host, pop3s, context=ctx)
        p.user("t")
        p.pass_("pw")
        p.quit()
        p = poplib.POP3(d.host, d.pop3_port)
        assert "STLS" in p.capa()
        p.stls(ctx)
        p.user("t")
        p.pass_("pw")
        p.quit()
