"""Bounded memory while streaming a huge message, and a graceful drain on
SIGTERM."""

from __future__ import annotations

import signal
import socket
import time

from corpus import large_attachment, simple_message
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate

MB = 1_000_000


def drain_retr(c: Pop3Raw, n: int) -> int:
    """Sends RETR n and reads the answer to the end; returns its size."""
    c.send(f"RETR {n}\r\n")
    status = c.line()
    assert status.startswith(b"+OK"), status
    total, tail = len(c.buf), c.buf[-5:]
    c.buf = b""
    while tail != b"\r\n.\r\n":
        chunk = c.sock.recv(1 << 16)
        assert chunk, "connection closed mid-message"
        total += len(chunk)
        tail = (tail + chunk)[-5:]
    return total


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_100mb_message_streams_in_bounded_memory(dovecot, user):
    user.deliver(simple_message(1), large_attachment(100 * MB))
    with Popgate(dovecot.imap_port) as pg, Pop3Raw(pg.port) as c:
        assert c.login(user.name, user.password).startswith(b"+OK")
        drain_retr(c, 1)  # warm up buffers and allocator
        before = pg.status_kib("VmRSS")
        pg.reset_peak()
        size = drain_retr(c, 2)
        peak = pg.status_kib("VmHWM")
        growth = peak - before
        print(f"\nRETR of {size} octets: RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB")
        assert size > 100 * MB
        assert growth < 4096, f"resident memory grew by {growth} KiB"


def test_a_stalled_reader_holds_the_stream_back(dovecot, user):
    """Backpressure: while the client reads nothing, popgate stops reading
    the upstream literal instead of buffering the message."""
    user.deliver(simple_message(1), large_attachment(30 * MB))
    with Popgate(dovecot.imap_port) as pg:
        c = Pop3Raw.__new__(Pop3Raw)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(30)
        s.connect(("127.0.0.1", pg.port))
        c.sock, c.buf = s, b""
        c.greeting = c.line()
        with c:
            assert c.login(user.name, user.password).startswith(b"+OK")
            drain_retr(c, 1)
            before = pg.status_kib("VmRSS")
            pg.reset_peak()
            c.send("RETR 2\r\n")
            # Wait until popgate's memory has settled while we read nothing.
            last, steady = -1, 0
            deadline = time.monotonic() + 20
            while steady < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
                peak = pg.status_kib("VmHWM")
                steady = steady + 1 if peak == last else 0
                last = peak
            growth = pg.status_kib("VmHWM") - before
            assert growth < 4096, f"popgate buffered {growth} KiB for a stalled reader"
            status = c.line()
            assert status.startswith(b"+OK"), status
            c.buf = b""
            tail, total = b"", 0
            while tail != b"\r\n.\r\n":
                chunk = c.sock.recv(1 << 16)
                assert chunk, "connection closed mid-message"
                total += len(chunk)
                tail = (tail + chunk)[-5:]
            assert total > 30 * MB


def test_sigterm_lets_a_running_download_finish(dovecot, user):
    user.deliver(large_attachment(8 * MB), simple_message(2))
    pg = Popgate(dovecot.imap_port, extra="shutdown:\n  drain_timeout: 20s\n")
    try:
        c = Pop3Raw(pg.port)
        assert c.login(user.name, user.password).startswith(b"+OK")
        c.send("RETR 1\r\n")
        assert c.line().startswith(b"+OK")
        pg.signal(signal.SIGTERM)
        # New connections are refused while the download goes on.
        wait_for(lambda: refused(pg.port), 15, "the listener to close")
        received = len(c.buf)
        c.buf = b""
        while not received or not c.buf.endswith(b"\r\n.\r\n"):
            chunk = c.sock.recv(1 << 16)
            assert chunk, "download cut short by the shutdown"
            received += len(chunk)
            c.buf = (c.buf + chunk)[-5:]
            time.sleep(0.001)
        c.buf = b""
        assert received > 8 * MB
        # The session may finish normally, deletions included.
        assert c.answer("DELE 2").startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
        assert pg.wait(30) == 0
    finally:
        pg.stop()
    assert len(user.uids()) == 1
    assert "drain time over" not in pg.log_text()
