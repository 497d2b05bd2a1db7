"""Pipelining and bad input: every command is answered in order, bad input
gets -ERR or a clean close, and the server keeps serving everyone else."""

from __future__ import annotations

import random

from corpus import simple_message
from pop3raw import Pop3Raw



def test_pipelined_burst_of_200_commands_is_answered_in_order(gateway, user):
    user.deliver(*(simple_message(i) for i in range(5)))
    rng = random.Random(7)
    menu = ["STAT", "LIST", "UIDL", "NOOP", "LIST 3", "UIDL 2", "RETR 1", "TOP 4 1",
            "DELE 5", "RSET", "RETR 9", "TOP 2 0", "CAPA", "XYZZY", "LIST 0"]
    # The burst ends with a pipelined DELE, so QUIT's update runs on it.
    commands = [rng.choice(menu) for _ in range(198)] + ["DELE 3", "QUIT"]
    before = user.uids()
    with user.pop3(gateway.port) as c:
        c.send("".join(f"{cmd}\r\n" for cmd in commands))
        answers = [c.read_answer(cmd) for cmd in commands]
        assert c.closed()
    expected_prefix = {
        "STAT": b"+OK 5 ", "LIST": b"+OK 5 messages:", "LIST 3": b"+OK 3 ", "UIDL 2": b"+OK 2 ",
        "RETR 1": b"+OK ", "RETR 9": b"-ERR", "XYZZY": b"-ERR", "LIST 0": b"-ERR", "QUIT": b"+OK",
        "DELE 3": b"+OK",
    }
    deleted = False
    for cmd, answer in zip(commands, answers):
        if cmd == "DELE 5":
            # A second DELE of the same message is refused until RSET.
            assert answer.startswith(b"-ERR" if deleted else b"+OK"), (cmd, answer)
            deleted = True
            continue
        if cmd == "RSET":
            deleted = False
        if cmd in ("STAT", "LIST") and deleted:
            assert answer.startswith(b"+OK 4 "), (cmd, answer)
            continue
        want = expected_prefix.get(cmd, b"+OK")
        assert answer.startswith(want), (cmd, answer)
        if cmd == "RETR 1":
            assert b"Message 0" in answer and answer.endswith(b"\r\n.\r\n")
    # QUIT removed exactly what was marked after the last RSET.
    gone = {before[2]} | ({before[4]} if deleted else set())
    assert user.uids() == [u for u in before if u not in gone]


def test_bad_input_gets_err_and_the_session_goes_on(gateway, user):
    user.deliver(simple_message(1))
    with Pop3Raw(gateway.port) as c:
        bad_before_login = ["STAT", "RETR 1", "DELE 1", "PASS nobody-said-user", "LIST 1"]
        for cmd in bad_before_login:
            assert c.answer(cmd).startswith(b"-ERR"), cmd
        assert c.login(user.name, user.password).startswith(b"+OK")
        for cmd in ["RETR 0", "RETR 2", "RETR -1", "RETR x", "RETR 99999999999", "DELE", "TOP 1",
                    "TOP 1 -1", "TOP 1 x", "LIST 1 2", "UIDL abc", "STAT now", "USER again",
                    "AUTH PLAIN", "HELO", "GET / HTTP/1.1"]:
            assert c.answer(cmd).startswith(b"-ERR"), cmd
        c.send(b"NO\x00OP\r\n")
        assert c.line().startswith(b"-ERR")
        c.send(b"LIST \xff\xfe\r\n")
        assert c.line().startswith(b"-ERR")
        c.send(b"x" * 20000 + b"\r\n")
        assert c.line().startswith(b"-ERR")
        assert c.answer("STAT").startswith(b"+OK 1 ")
        assert c.answer("QUIT").startswith(b"+OK")


def test_binary_garbage_is_closed_cleanly_and_others_are_served(gateway, user):
    user.deliver(simple_message(1))
    rng = random.Random(1)
    with user.pop3(gateway.port) as other:
        with Pop3Raw(gateway.port) as c:
            c.send(bytes(rng.randrange(256) for _ in range(200_000)))
            assert c.closed(timeout=10)
            assert b"Too many bad commands" in c.buf
        # The session opened before is unharmed, and new ones work.
        assert other.answer("STAT").startswith(b"+OK 1 ")
    with user.pop3(gateway.port) as again:
        assert again.answer("RETR 1").startswith(b"+OK")
    assert "panicked" not in gateway.log_text()


def test_connection_limit_answers_sys_temp(dovecot):
    from popgate import Popgate

    with Popgate(dovecot.imap_port, extra="session:\n  max_connections: 2\n") as pg:
        a, b = Pop3Raw(pg.port), Pop3Raw(pg.port)
        import socket

        # Exactly two are admitted, the third refused.
        assert a.greeting.startswith(b"+OK") and b.greeting.startswith(b"+OK")
        s = socket.create_connection(("127.0.0.1", pg.port), timeout=5)
        assert s.recv(1000).startswith(b"-ERR [SYS/TEMP]")
        s.close()
        a.close()
        b.close()


def test_twenty_unparsable_lines_in_a_row_close_the_connection(gateway):
    with Pop3Raw(gateway.port) as c:
        # Nineteen, then a good command: the count starts again.
        for _ in range(19):
            assert c.answer("XYZZY").startswith(b"-ERR")
        assert c.answer("NOOP").startswith(b"+OK")
        # Over-long lines count as unparsable too.
        for i in range(19):
            c.send(b"x" * 9000 + b"\r\n" if i % 2 else b"XYZZY\r\n")
            assert c.line().startswith(b"-ERR")
        c.send("XYZZY\r\n")
        assert c.line().startswith(b"-ERR")
        assert c.closed(timeout=30)
        assert b"Too many bad commands" in c.buf
