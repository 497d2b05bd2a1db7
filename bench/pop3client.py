"""A fast raw-socket POP3 client for the benchmark.

The client does as little as possible per byte: it receives into one
preallocated buffer (``recv_into``, no concatenation), looks for line ends
and the multi-line terminator ``CRLF . CRLF`` with ``bytearray.find`` (C
speed), and never copies a message body.  A multi-line answer is only
skipped and counted, not stored.

Only what the workloads need: greeting, USER/PASS, single-line and
multi-line answers, and a pipelined command runner that keeps a fixed number
of commands in flight.
"""

from __future__ import annotations

import socket
import ssl
from typing import Sequence

HOST = "127.0.0.1"
# The name TLS clients verify: the test certificates (tests/e2e/certs.py)
# carry DNS:localhost and IP:127.0.0.1.
TLS_NAME = "localhost"
TERM = b"\r\n.\r\n"


class Pop3Error(RuntimeError):
    pass


class Conn:
    """One POP3 connection with a zero-copy receive buffer."""

    def __init__(self, port: int, host: str = HOST, timeout: float | None = 120.0,
                 bufsize: int = 4 << 20, connect: bool = True,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.tls = tls      # implicit TLS (POP3S) with this context
        self.buf = bytearray(bufsize)
        self.mv = memoryview(self.buf)
        self.r = 0          # start of unread data
        self.w = 0          # end of received data
        self.received = 0   # octets received on this connection
        self.sock: socket.socket | None = None
        if connect:
            self.connect()

    # ------------------------------------------------------------ transport

    def connect(self) -> bytes:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # A full handshake on every connection: the context keeps no
            # session for resumption unless one is passed explicitly.
            s = self.tls.wrap_socket(s, server_hostname=TLS_NAME)
        self.sock = s
        greeting = self.line()
        if not greeting.startswith(b"+OK"):
            raise Pop3Error(f"greeting: {greeting!r}")
        return greeting

    def _fill(self) -> None:
        """Receive more data at the end of the buffer, compacting (or
        growing) it first when the free space is used up."""
        if self.w == len(self.buf):
            pending = self.w - self.r
            if pending * 2 > len(self.buf):
                new = bytearray(len(self.buf) * 2)
                new[:pending] = self.buf[self.r:self.w]
                self.buf, self.mv = new, memoryview(new)
            else:
                self.buf[:pending] = self.buf[self.r:self.w]
            self.r, self.w = 0, pending
        assert self.sock is not None
        n = self.sock.recv_into(self.mv[self.w:])
        if not n:
            raise Pop3Error("server closed the connection")
        self.w += n
        self.received += n

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- parsing

    def line(self) -> bytes:
        """The next line without its CRLF."""
        while True:
            i = self.buf.find(b"\r\n", self.r, self.w)
            if i >= 0:
                out = bytes(self.buf[self.r:i])
                self.r = i + 2
                return out
            self._fill()

    def skip_multi(self) -> int:
        """Skips the body of a multi-line answer whose status line was just
        read, up to and including the terminating ".CRLF"; returns the
        octets skipped.  Dot-stuffing guarantees that CRLF.CRLF only occurs
        at the end, and an empty body is just ".CRLF"."""
        while self.w - self.r < 3:
            self._fill()
        if self.buf[self.r:self.r + 3] == b".\r\n":
            self.r += 3
            return 3
        skipped = 0
        while True:
            i = self.buf.find(TERM, self.r, self.w)
            if i >= 0:
                end = i + 5
                skipped += end - self.r
                self.r = end
                return skipped
            # Everything but the last 4 octets (a terminator may straddle
            # the next receive) is body: consume it.
            keep = max(self.r, self.w - 4)
            skipped += keep - self.r
            self.r = keep
            self._fill()

    def count_multi(self) -> tuple[int, int]:
        """Like skip_multi, also counting the body's lines (the final "."
        not included): (octets, lines).  Slower; used for listings."""
        while self.w - self.r < 3:
            self._fill()
        if self.buf[self.r:self.r + 3] == b".\r\n":
            self.r += 3
            return 3, 0
        skipped = lines = 0
        while True:
            i = self.buf.find(TERM, self.r, self.w)
            if i >= 0:
                end = i + 5
                lines += self.buf.count(b"\r\n", self.r, i + 2)
                skipped += end - self.r
                self.r = end
                return skipped, lines
            keep = max(self.r, self.w - 4)
            # Lines ending before keep (a CRLF may straddle keep: count it
            # with the next part, whose search starts at keep).
            cut = keep
            if cut > self.r and self.buf[cut - 1:cut] == b"\r":
                cut -= 1
            lines += self.buf.count(b"\r\n", self.r, cut)
            skipped += cut - self.r
            self.r = cut
            self._fill()

    def command(self, cmd: bytes) -> bytes:
        """Sends one single-line-answer command; returns the status line,
        raising on -ERR."""
        self.send(cmd)
        status = self.line()
        if not status.startswith(b"+OK"):
            raise Pop3Error(f"{cmd.split()[0].decode()}: {status!r}")
        return status

    def login(self, user: str, password: str) -> None:
        self.command(b"USER " + user.encode() + b"\r\n")
        self.command(b"PASS " + password.encode() + b"\r\n")

    def quit(self) -> None:
        try:
            self.send(b"QUIT\r\n")
            self.line()
        except (OSError, Pop3Error):
            pass
        self.close()

    # ----------------------------------------------------------- pipelining

    def pipeline(self, commands: Sequence[bytes], depth: int,
                 multi: bool = True, count_lines: bool = False) -> tuple[int, int]:
        """Sends the commands keeping up to ``depth`` of them in flight and
        reads every answer.  ``multi``: the answers are multi-line (RETR,
        TOP, UIDL, LIST).  Freed slots are refilled in batches of
        depth/4 commands, one write per batch.  Returns
        (octets of all answers, body lines if count_lines else 0)."""
        n = len(commands)
        sent = done = 0
        octets = lines = 0
        refill = max(1, depth // 4)
        first = b"".join(commands[:depth])
        sent = min(depth, n)
        self.send(first)
        while done < n:
            status = self.line()
            if not status.startswith(b"+OK"):
                raise Pop3Error(f"{commands[done].strip()!r}: {status!r}")
            octets += len(status) + 2
            if multi:
                if count_lines:
                    o, ln = self.count_multi()
                    octets += o
                    lines += ln
                else:
                    octets += self.skip_multi()
            done += 1
            if sent < n:
                # Refill the window in batches (a quarter of it at a time,
                # so at least 3/4 of the commands stay in flight).
                free = depth - (sent - done)
                if free >= refill:
                    k = min(free, n - sent)
                    self.send(b"".join(commands[sent:sent + k]))
                    sent += k
        return octets, lines
