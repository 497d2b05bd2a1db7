"""Helpers shared by the fault-injection tests: knowing when popgate has
finished a session (its log line, and its upstream connections closed),
reading the mailbox state straight from Dovecot, and a POP3 client
with a small receive window so a drop lands in the middle of a message."""

from __future__ import annotations

import re
import socket

from polling import wait_for
from pop3raw import unstuff


def closed_outcome(pg, client_port: int) -> str | None:
    """The outcome of the session whose client used `client_port`, once
    popgate has logged its `session closed` line; None before."""
    opened = "client=127.0.0.1:%d}" % client_port
    log = pg.log_text()
    # Ports get reused: look after this port's last session start.
    starts = [m.start() for m in re.finditer(re.escape(opened) + r"[^\n]*session opened", log)]
    rx = re.compile(re.escape(opened) + r".*session closed.*outcome=\"?(\w+)")
    m = rx.search(log, starts[-1] if starts else 0)
    return m.group(1) if m else None


def session_outcome(pg, client_port: int, timeout: float = 30) -> str:
    """Waits for the session's `session closed` line; returns its outcome."""
    return wait_for(
        lambda: closed_outcome(pg, client_port), timeout, f"the session from port {client_port} to close"
    )


def upstream_open(pg) -> int:
    """Upstream connections popgate holds open (needs `metrics=True`)."""
    status, text = pg.http("/metrics")
    assert status == 200
    rx = re.compile(r"^popgate_upstream_connections_open\{[^}]*\} (\d+)", re.M)
    return sum(int(n) for n in rx.findall(text))


def finished(pg, client_port: int, others: int = 0, timeout: float = 30) -> str:
    """Waits until popgate has closed the session and its upstream
    connection (so no IMAP command of the session is still in flight), and
    returns the session's outcome. `others`: sessions still open."""
    outcome = session_outcome(pg, client_port, timeout)
    wait_for(lambda: upstream_open(pg) <= others, timeout, "popgate to close its upstream connections")
    return outcome


def state(dv, user: str) -> dict[int, tuple[frozenset, bytes]]:
    """UID -> (flags, body), read directly from Dovecot."""
    flags = dv.flags(user)
    bodies = dv.bodies(user)
    assert set(flags) == set(bodies)
    return {uid: (frozenset(flags[uid]), bodies[uid]) for uid in flags}


def deleted(st: dict) -> list[int]:
    return [uid for uid, (flags, _) in st.items() if "\\Deleted" in flags]


def seen(st: dict) -> list[int]:
    return [uid for uid, (flags, _) in st.items() if "\\Seen" in flags]


class Pop3Wire:
    """A POP3 client on a socket with a small receive buffer, so popgate
    cannot push a whole large message into the kernel ahead of the reader."""

    def __init__(self, port: int, rcvbuf: int = 4096, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.buf = b""
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def skip_body(self) -> None:
        """Reads past a multi-line answer's body."""
        while self.line() != b".\r\n":
            pass

    def retr(self, n: int) -> bytes | None:
        """The message RETR n gives (unstuffed), or None on -ERR."""
        self.sock.sendall(b"RETR %d\r\n" % n)
        if not self.line().startswith(b"+OK"):
            return None
        lines = []
        while (line := self.line()) != b".\r\n":
            lines.append(line)
        return unstuff(b"".join(lines) + b".\r\n")

    def retr_dele_quit(self) -> None:
        """RETR 1, DELE 2, then QUIT, its answer left unread."""
        self.sock.sendall(b"RETR 1\r\n")
        assert self.line().startswith(b"+OK")
        self.skip_body()
        assert self.cmd("DELE 2").startswith(b"+OK")
        self.sock.sendall(b"QUIT\r\n")

    def login(self, user: str, password: str) -> None:
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        answer = self.cmd(f"PASS {password}")
        assert answer.startswith(b"+OK"), answer

    def read_at_least(self, n: int) -> bytes:
        """Reads until `n` bytes beyond what was consumed have arrived."""
        while len(self.buf) < n:
            chunk = self.sock.recv(min(65536, n - len(self.buf)))
            if not chunk:
                break
            self.buf += chunk
        return self.buf

    def read_to_end(self) -> tuple[bytes, bool]:
        """Everything until the server closes; True if it did close."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return self.buf, True
                self.buf += chunk
        except (TimeoutError, socket.timeout):
            return self.buf, False
        except ConnectionResetError:
            return self.buf, True

    def drop(self, reset: bool = False) -> None:
        """Closes abruptly; with `reset`, an RST instead of a FIN."""
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        self.sock.close()

    def __enter__(self) -> "Pop3Wire":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
