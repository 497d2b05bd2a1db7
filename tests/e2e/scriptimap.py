"""A scripted IMAP server for what a real one cannot be made to do:
malformed lines, literals that lie about their size or never end, BYE in
the middle of a fetch, bodies out of order or unasked for, a greeting that
never comes or trickles in a byte at a time.

It keeps a small mailbox (UID -> body, flags) and answers the commands
popgate sends (CAPABILITY, ID, AUTHENTICATE PLAIN, LOGIN, SELECT, UID FETCH,
UID STORE, UID EXPUNGE, UID SEARCH, EXPUNGE, NOOP, LOGOUT) correctly unless
a hook says otherwise. A hook is a function ``(session, tag, args) -> bool``
registered under a verb (``"GREETING"``, ``"BODIES"`` for body fetches,
``"LISTING"`` for the login snapshot, or a command name); it returns True
when it has answered itself.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from typing import Callable

from loopserver import LoopbackServer

CAPS = b"IMAP4rev1 SASL-IR AUTH=PLAIN UIDPLUS LITERAL+ ID"


class Mailbox:
    def __init__(self, bodies: list[bytes], uid_validity: int = 77) -> None:
        self.uid_validity = uid_validity
        self.lock = threading.Lock()
        self.messages: dict[int, bytes] = {i + 1: b for i, b in enumerate(bodies)}
        self.flags: dict[int, set[str]] = {uid: set() for uid in self.messages}
        self.expunged: list[int] = []

    def seq(self, uid: int) -> int:
        return sorted(self.messages).index(uid) + 1


def uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a = int(lo) if lo != "*" else 1 << 31
        b = (int(hi) if hi != "*" else 1 << 31) if hi else a
        out.extend(range(min(a, b), min(max(a, b), 1 << 20) + 1))
    return out


class Session:
    def __init__(self, server: "ScriptedImap", sock: socket.socket) -> None:
        self.server, self.sock, self.mailbox = server, sock, server.mailbox
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, interval: float = 1.0) -> bool:
        """Sends one byte per `interval`; False once the peer is gone."""
        for i in range(len(data)):
            try:
                self.sock.sendall(data[i : i + 1])
            except OSError:
                return False
            time.sleep(interval)
        return True

    def fetch_item(self, uid: int, body: bytes | None = None, size: int | None = None) -> bytes:
        body = self.mailbox.messages[uid] if body is None else body
        n = len(body) if size is None else size
        return b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (self.mailbox.seq(uid), uid, n) + body + b")\r\n"

    def readline(self) -> bytes | None:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def hook(self, name: str, tag: bytes, args: str) -> bool:
        fn = self.server.hooks.get(name)
        return bool(fn and fn(self, tag, args))

    def serve(self) -> None:
        if not self.hook("GREETING", b"", ""):
            self.send(b"* OK [CAPABILITY " + CAPS + b"] scripted ready\r\n")
        while True:
            line = self.readline()
            if line is None:
                return
            self.server.commands.append(line)
            tag, _, rest = line.partition(b" ")
            verb, _, args = rest.decode("latin-1").partition(" ")
            verb = verb.upper()
            if verb == "UID":
                sub, _, args = args.partition(" ")
                verb = "UID " + sub.upper()
            if self.hook(verb, tag, args):
                continue
            if not self.answer(tag, verb, args):
                return

    def answer(self, tag: bytes, verb: str, args: str) -> bool:
        mb = self.mailbox
        ok = tag + b" OK done\r\n"
        if verb == "CAPABILITY":
            self.send(b"* CAPABILITY " + CAPS + b"\r\n" + ok)
        elif verb == "ID":
            self.send(b"* ID NIL\r\n" + ok)
        elif verb in ("AUTHENTICATE", "LOGIN"):
            if verb == "AUTHENTICATE":
                parts = args.split(" ")
                decoded = base64.b64decode(parts[1]) if len(parts) > 1 else b""
                self.server.logins.append(decoded.split(b"\0")[1:2])
            self.send(tag + b" OK [CAPABILITY " + CAPS + b"] logged in\r\n")
        elif verb == "SELECT":
            with mb.lock:
                n = len(mb.messages)
            self.send(b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\n" % (n, mb.uid_validity)
                      + tag + b" OK [READ-WRITE] selected\r\n")
        elif verb == "UID FETCH" and "BODY" not in args.upper():
            if not self.hook("LISTING", tag, args):
                out = b""
                with mb.lock:
                    for uid in sorted(mb.messages):
                        flags = " ".join(sorted(mb.flags[uid])).encode()
                        out += b"* %d FETCH (UID %d RFC822.SIZE %d FLAGS (%s))\r\n" % (
                            mb.seq(uid), uid, len(mb.messages[uid]), flags)
                self.send(out + ok)
        elif verb == "UID FETCH":
            if not self.hook("BODIES", tag, args):
                uids = [u for u in uid_set(args.split(" ")[0]) if u in mb.messages]
                self.send(b"".join(self.fetch_item(u) for u in uids) + ok)
        elif verb == "UID STORE":
            set_, op, flags = args.split(" ", 2)
            names = flags.strip("()").split()
            with mb.lock:
                for uid in uid_set(set_):
                    if uid in mb.flags:
                        (mb.flags[uid].update if op.startswith("+") else mb.flags[uid].difference_update)(names)
            self.send(ok)
        elif verb in ("UID EXPUNGE", "EXPUNGE"):
            out = b""
            with mb.lock:
                wanted = uid_set(args) if verb == "UID EXPUNGE" else list(mb.messages)
                for uid in sorted(wanted, reverse=True):
                    if uid in mb.messages and "\\Deleted" in mb.flags[uid]:
                        out += b"* %d EXPUNGE\r\n" % mb.seq(uid)
                        del mb.messages[uid]
                        mb.expunged.append(uid)
            self.send(out + ok)
        elif verb == "UID SEARCH":
            with mb.lock:
                hits = [str(u).encode() for u in sorted(mb.messages) if "\\Deleted" in mb.flags[u]]
            self.send(b"* SEARCH " + b" ".join(hits) + b"\r\n" + ok)
        elif verb == "LOGOUT":
            self.send(b"* BYE bye\r\n" + ok)
            return False
        else:
            self.send(ok)
        return True


class ScriptedImap(LoopbackServer):
    def __init__(self, bodies: list[bytes], hooks: dict[str, Callable] | None = None) -> None:
        self.mailbox = Mailbox(bodies)
        self.hooks = hooks or {}
        self.commands: list[bytes] = []
        self.logins: list = []
        self.sessions: list[Session] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        s = Session(self, conn)
        self.sessions.append(s)
        s.serve()

    def sent(self, pattern: str) -> list[bytes]:
        """Commands received that match `pattern` (after the tag)."""
        rx = re.compile(pattern.encode())
        return [c for c in self.commands if rx.search(c.partition(b" ")[2])]
