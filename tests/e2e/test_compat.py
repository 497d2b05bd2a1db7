"""popgate answers exactly as Dovecot's own POP3 does for the same mailbox,
and RETR carries exactly the IMAP BODY[] octets."""

from __future__ import annotations

import pytest

from corpus import large_attachment, retr_wire, tricky_corpus
from pop3raw import Pop3Raw


@pytest.fixture
def tricky_user(user):
    user.deliver(*(raw for _name, raw in tricky_corpus()))
    user.deliver(large_attachment(300_000))
    return user


def answers(port: int, user, commands: list[str]) -> list[bytes]:
    with Pop3Raw(port) as c:
        assert c.login(user.name, user.password).startswith(b"+OK")
        out = [c.answer(cmd) for cmd in commands]
        # No QUIT: leave both servers' sessions without an UPDATE.
        return out


def test_listing_and_top_match_dovecot(dovecot, gateway, tricky_user):
    count = len(tricky_user.uids())
    assert count == len(tricky_corpus()) + 1
    commands = ["STAT", "LIST", "UIDL"]
    for n in range(1, count + 1):
        commands += [f"LIST {n}", f"UIDL {n}", f"RETR {n}"]
        commands += [f"TOP {n} {k}" for k in (0, 1, 5, 99999999)]
    commands += [f"RETR {count + 1}", f"TOP {count + 1} 0", "LIST 0"]
    ours = answers(gateway.port, tricky_user, commands)
    theirs = answers(dovecot.pop3_port, tricky_user, commands)
    for cmd, a, b in zip(commands, ours, theirs):
        if a.startswith(b"-ERR") and b.startswith(b"-ERR"):
            continue  # error wording may differ; both refuse
        assert a == b, f"{cmd}: popgate {a[:300]!r} != dovecot {b[:300]!r}"


def test_retr_sends_exactly_the_imap_body(gateway, tricky_user):
    bodies = tricky_user.bodies()
    with Pop3Raw(gateway.port) as c:
        assert c.login(tricky_user.name, tricky_user.password).startswith(b"+OK")
        for n, uid in enumerate(sorted(bodies), start=1):
            status = c.answer(f"LIST {n}")
            size = int(status.split()[2])
            c.send(f"RETR {n}\r\n")
            assert c.line() == f"+OK {size} octets\r\n".encode()
            wire = c.multiline()
            assert wire == retr_wire(bodies[uid]), f"message {n}"
            assert len(bodies[uid]) == size


def test_uidl_default_is_dovecots_format(dovecot, gateway, user):
    user.deliver(b"Subject: one\n\nx\n", b"Subject: two\n\ny\n")
    validity = dovecot.uid_validity(user.name)
    with Pop3Raw(gateway.port) as c:
        c.login(user.name, user.password)
        wire = c.answer("UIDL")
    expected = "".join(f"{n} {uid:08x}{validity:08x}\r\n" for n, uid in enumerate(user.uids(), 1))
    assert wire == b"+OK\r\n" + expected.encode() + b".\r\n"


def test_uidls_match_dovecot_after_an_expunge(dovecot, gateway, user):
    """Once another client has expunged mail, message numbers and UIDs part
    ways: UIDL and LIST still answer as Dovecot's POP3 does, from the UID."""
    user.deliver(*(f"Subject: m{i}\n\nbody {i}\n".encode() for i in range(5)))
    uids = user.uids()
    dovecot.expunge_uid(user.name, uids[0])
    dovecot.expunge_uid(user.name, uids[2])
    commands = ["STAT", "LIST", "UIDL", "UIDL 1", "UIDL 3", "LIST 2"]
    ours = answers(gateway.port, user, commands)
    theirs = answers(dovecot.pop3_port, user, commands)
    assert ours == theirs
    validity = dovecot.uid_validity(user.name)
    survivors = [uids[1], uids[3], uids[4]]
    expected = "".join(f"{n} {uid:08x}{validity:08x}\r\n" for n, uid in enumerate(survivors, 1))
    assert ours[2] == b"+OK\r\n" + expected.encode() + b".\r\n"
