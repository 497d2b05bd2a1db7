"""A raw POP3 client that shows the exact bytes of every answer, for tests
that compare servers byte for byte or send malformed and pipelined input."""

from __future__ import annotations

import socket
import struct

MULTILINE = {"LIST", "UIDL", "RETR", "TOP", "CAPA"}


class Pop3Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        """One line including its CRLF."""
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def multiline(self) -> bytes:
        """The body of a multi-line answer, up to and including ".\\r\\n"."""
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)

    def read_answer(self, command: str) -> bytes:
        """The whole answer (status line and, where the command has one, the
        multi-line body) to a command already sent."""
        status = self.line()
        words = command.split()
        verb = words[0].upper() if words else ""
        multi = (verb in MULTILINE and not (verb in ("LIST", "UIDL") and len(words) > 1)) or (
            verb == "AUTH" and len(words) == 1
        )
        if status.startswith(b"+OK") and multi:
            return status + self.multiline()
        return status

    def answer(self, command: str) -> bytes:
        self.send(command + "\r\n")
        return self.read_answer(command)

    def login(self, user: str, password: str) -> bytes:
        assert self.answer(f"USER {user}").startswith(b"+OK")
        return self.answer(f"PASS {password}")

    def closed(self, timeout: float = 5) -> bool:
        """True if the server closes the connection (after any pending data)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Pop3Raw":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unstuff(multiline: bytes) -> bytes:
    """The message inside a RETR/TOP body (RFC 1939 section 3)."""
    assert multiline.endswith(b".\r\n")
    lines = multiline[:-3].split(b"\r\n")[:-1]
    return b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in lines)


def from_address(port: int, source: str) -> Pop3Raw:
    """A POP3 connection from another loopback address (127.0.0.0/8)."""
    c = Pop3Raw.__new__(Pop3Raw)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    c.buf = b""
    c.greeting = c.line()
    return c


def proxy_v2(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 110) -> bytes:
    """A PROXY protocol v2 header for a TCP/IPv4 client `src`:`sport`."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
