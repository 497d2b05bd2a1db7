"""A scripted POP3 server for the faults a real old server cannot be made
to show: garbage answers, a connection dropped in the middle of UIDL, the
same UIDL listed for two messages.

It serves a fixed maildrop (number -> (UIDL, message)) correctly to any
user and password (recording what it was sent), unless a fault is named:
``fault`` is a function ``(command, conn) -> bool`` called with each
command line; it returns True when it has answered (or dropped the
connection) itself.
"""

from __future__ import annotations

import socket
from typing import Callable

from loopserver import LoopbackServer


class ScriptedPop3(LoopbackServer):
    def __init__(self, messages: list[tuple[str, bytes]],
                 fault: Callable[[str, socket.socket], bool] | None = None) -> None:
        self.messages = messages
        self.fault = fault
        self.commands: list[str] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(b"+OK scripted POP3 ready\r\n")
        f = conn.makefile("rb")
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(line)
            if self.fault and self.fault(line, conn):
                continue
            if not self._answer(line, conn):
                return

    def listing(self, what: str) -> bytes:
        out = b"+OK\r\n"
        for i, (uidl, body) in enumerate(self.messages, 1):
            value = uidl.encode() if what == "UIDL" else str(len(body)).encode()
            out += b"%d %s\r\n" % (i, value)
        return out + b".\r\n"

    def _answer(self, line: str, conn: socket.socket) -> bool:
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb == "CAPA":
            conn.sendall(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\n.\r\n")
        elif verb in ("USER", "PASS"):
            conn.sendall(b"+OK\r\n")
        elif verb in ("UIDL", "LIST"):
            conn.sendall(self.listing(verb))
        elif verb == "TOP":
            n = int(arg.split()[0])
            body = self.messages[n - 1][1].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            header = body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            stuffed = b"".join(b"." + l if l.startswith(b".") else l
                               for l in header.splitlines(keepends=True))
            conn.sendall(b"+OK\r\n" + stuffed + b".\r\n")
        elif verb == "QUIT":
            conn.sendall(b"+OK bye\r\n")
            return False
        else:
            conn.sendall(b"-ERR unknown command\r\n")
        return True
