"""A client that drops at every point of the protocol leaves the mailbox as
it found it: every UID still there with its body, no \\Deleted, no \\Seen.
Only a QUIT that popgate has read applies the session's marks."""

from __future__ import annotations

import pytest

from corpus import large_attachment, simple_message
from faultkit import Pop3Wire, finished, state
from popgate import Popgate

BIG = 1_000_000  # octets of the message that drops land inside


@pytest.fixture
def pg(dovecot):
    """A gateway per test: a session left open by a failed test cannot
    hold up the next one."""
    with Popgate(dovecot.imap_port, metrics=True) as gateway:
        yield gateway


def mailbox(user, big: bool = False):
    user.deliver(*(simple_message(i) for i in range(3)))
    if big:
        user.deliver(large_attachment(BIG))
    return state(user.dv, user.name)


# Each step leads up to the drop; `True` marks steps after which popgate
# holds an upstream session.
BEFORE_LOGIN = {
    "before_greeting": [],
    "after_greeting": ["<greeting>"],
    "after_user": ["<greeting>", "USER"],
    "inside_pass_line": ["<greeting>", "USER", "<partial PASS>"],
    "inside_auth_plain": ["<greeting>", "AUTH PLAIN"],
}


@pytest.mark.parametrize("point", list(BEFORE_LOGIN))
def test_drop_before_login_touches_nothing(pg, user, point):
    before = mailbox(user)
    c = Pop3Wire(pg.port) if point != "before_greeting" else None
    if c is None:
        import socket

        s = socket.create_connection(("127.0.0.1", pg.port))
        port = s.getsockname()[1]
        s.close()
        assert finished(pg, port) == "client_disconnected"
    else:
        for step in BEFORE_LOGIN[point][1:]:
            if step == "USER":
                assert c.cmd(f"USER {user.name}").startswith(b"+OK")
            elif step == "<partial PASS>":
                c.sock.sendall(f"PASS {user.password}".encode())
            elif step == "AUTH PLAIN":
                assert c.cmd("AUTH PLAIN").startswith(b"+ ")
        c.drop()
        assert finished(pg, c.port) == "client_disconnected"
    assert state(user.dv, user.name) == before


IN_SESSION = {
    "pass_in_flight": [],
    "idle_after_login": None,
    "after_stat_list_uidl": ["STAT", "LIST", "UIDL"],
    "after_dele": ["DELE 1", "DELE 3"],
    "after_top": ["DELE 2", "TOP 1 2"],
    "after_complete_retr": ["DELE 1", "RETR 2"],
    "after_rset": ["DELE 1", "RSET", "DELE 2"],
    "inside_quit_line": ["DELE 1", "<partial QUIT>"],
}


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("point", list(IN_SESSION))
def test_drop_in_session_touches_nothing(pg, user, point, reset):
    before = mailbox(user)
    c = Pop3Wire(pg.port)
    if point == "pass_in_flight":
        assert c.cmd(f"USER {user.name}").startswith(b"+OK")
        c.sock.sendall(f"PASS {user.password}\r\n".encode())
    else:
        c.login(user.name, user.password)
        for command in IN_SESSION[point] or []:
            if command == "<partial QUIT>":
                c.sock.sendall(b"QU")
                continue
            c.sock.sendall(command.encode() + b"\r\n")
            status = c.line()
            assert status.startswith(b"+OK"), (command, status)
            if command.split()[0] in ("LIST", "UIDL", "RETR", "TOP"):
                c.skip_body()
    c.drop(reset)
    assert finished(pg, c.port) == "client_disconnected"
    assert state(user.dv, user.name) == before


# Drops inside the answer to RETR of a 1 MB message, every few KB.
RETR_OFFSETS = [0, 1, 2 * 1024, 8 * 1024, 32 * 1024, 128 * 1024, 512 * 1024]


@pytest.mark.parametrize("offset", RETR_OFFSETS)
def test_drop_inside_retr_touches_nothing(pg, user, offset):
    before = mailbox(user, big=True)
    with Pop3Wire(pg.port) as c:
        c.login(user.name, user.password)
        assert c.cmd("DELE 1").startswith(b"+OK")
        c.sock.sendall(b"RETR 4\r\n")
        if offset:
            got = c.read_at_least(offset)
            assert got[:3] == b"+OK"[: len(got)], got[:100]
        c.drop(reset=offset % 2 == 0)
    assert finished(pg, c.port) == "client_disconnected"
    after = state(user.dv, user.name)
    assert after == before
    # The gateway still serves this user.
    with Pop3Wire(pg.port) as c:
        c.login(user.name, user.password)
        assert c.cmd("STAT").startswith(b"+OK 4 ")


@pytest.mark.parametrize("pipelined", [False, True], ids=["quit_alone", "dele_and_quit_pipelined"])
def test_quit_read_before_the_drop_applies_the_marks(pg, user, pipelined):
    before = mailbox(user)
    uids = sorted(before)
    c = Pop3Wire(pg.port)
    c.login(user.name, user.password)
    c.sock.sendall(b"RETR 1\r\n")
    assert c.line().startswith(b"+OK")
    c.skip_body()
    if pipelined:
        c.sock.sendall(b"DELE 2\r\nQUIT\r\n")
    else:
        assert c.cmd("DELE 2").startswith(b"+OK")
        c.sock.sendall(b"QUIT\r\n")
    c.drop()  # a FIN after the QUIT: the gateway has read it
    assert finished(pg, c.port) == "quit"
    after = state(user.dv, user.name)
    assert sorted(after) == [uids[0], uids[2]]
    assert after[uids[0]][0] == {"\\Seen"}
    assert after[uids[2]] == before[uids[2]]


def test_drop_inside_a_large_retr_does_not_panic(dovecot, user):
    """The upstream reader is inside the body literal when the client goes;
    the cleanup must skip or abandon the literal, not panic."""
    user.deliver(large_attachment(4_000_000))
    before = state(user.dv, user.name)
    with Popgate(dovecot.imap_port, metrics=True) as own:
        with Pop3Wire(own.port, rcvbuf=2048) as c:
            c.login(user.name, user.password)
            c.sock.sendall(b"RETR 1\r\n")
            c.read_at_least(8 * 1024)
            c.drop()
        assert finished(own, c.port) == "client_disconnected"
        assert state(user.dv, user.name) == before
        log = own.log_text()
    assert "panicked" not in log, log[-3000:]
