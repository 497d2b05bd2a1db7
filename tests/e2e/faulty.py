"""A fault-injecting TCP proxy in front of Dovecot's IMAP port, for what a
healthy server never does: refuse the removal at QUIT, or lack extensions
(UIDPLUS, SASL-IR, AUTH=PLAIN, LITERAL+) that Dovecot always offers.

Client-to-server traffic is read line by line (popgate sends no literals
unless LITERAL+ is hidden, and synchronizing literals pass through as
lines); server-to-client traffic passes as raw bytes, with capability lists
edited in the lines that carry them.
"""

from __future__ import annotations

import re
import socket
import threading

_CAPS = re.compile(rb"^(\* CAPABILITY |\* OK \[CAPABILITY |\S+ OK \[CAPABILITY )")


class FaultyProxy:
    def __init__(
        self, upstream_port: int, *, hide: tuple[str, ...] = (), refuse: str | None = None, port: int = 0
    ) -> None:
        """`hide`: capabilities to remove; `refuse`: a regex on client
        command lines (after the tag) to answer with NO instead of forwarding."""
        self.upstream_port = upstream_port
        self.hide = [h.encode() for h in hide]
        self.refuse = re.compile(refuse.encode()) if refuse else None
        self.refused: list[bytes] = []
        self.seen: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._links += [client, server]
            lock = threading.Lock()
            threading.Thread(target=self._up, args=(client, server, lock), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, lock), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, lock: threading.Lock) -> None:
        buf = b""
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line += b"\n"
                    tag, _, rest = line.partition(b" ")
                    self.seen.append(line)
                    if self.refuse and self.refuse.search(rest):
                        self.refused.append(line)
                        with lock:
                            client.sendall(tag + b" NO [SERVERBUG] Injected failure\r\n")
                        continue
                    server.sendall(line)
        except OSError:
            pass
        finally:
            server.close()

    def _edit(self, line: bytes) -> bytes:
        if _CAPS.match(line):
            for cap in self.hide:
                line = re.sub(rb" " + re.escape(cap) + rb"(?=[ \]\r])", b"", line)
        return line

    def _down(self, server: socket.socket, client: socket.socket, lock: threading.Lock) -> None:
        buf = b""
        try:
            while True:
                chunk = server.recv(65536)
                if not chunk:
                    break
                buf += chunk
                # Pass whole lines (edited) and keep a partial one for later.
                out, _, buf = buf.rpartition(b"\n") if b"\n" in buf else (b"", b"", buf)
                if out or _:
                    data = b"".join(self._edit(l) for l in (out + b"\n").splitlines(keepends=True))
                    with lock:
                        client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()

    def close(self) -> None:
        """The upstream goes away: no new connections, and the open ones
        (popgate's pooled connections among them) are cut."""
        self._stop = True
        for s in [self.sock] + self._links:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self) -> "FaultyProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
