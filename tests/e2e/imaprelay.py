"""An IMAP relay in front of Dovecot for what a healthy server never does:
it cuts the link or refuses a chosen command, cuts a reply after so many
bytes, holds a command or its reply until the test releases it (to kill
popgate at that exact point), or hides capabilities Dovecot always offers
(UIDPLUS, SASL-IR, AUTH=PLAIN, LITERAL+, STARTTLS, MOVE).

Client lines are matched (after the tag) against each rule's regex; the
`nth` matching line triggers it (with `every`, each one from the nth on).
Server bytes pass through untouched, but for the capability lists that
``hide`` edits (whole lines are passed on then).

Actions:
- ``refuse``: answer ``NO`` instead of forwarding.
- ``cut``: close both sides instead of forwarding.
- ``cut_reply``: forward, pass ``after`` bytes of what follows, then close.
- ``cut_before_done``: forward, let the server complete the command, pass
  everything up to its tagged reply, then close (done, but unconfirmed).
- ``hold``: do not forward until ``release()``.
- ``hold_reply``: forward, pass ``after`` bytes, then stall until
  ``release()``.
- ``hold_before_done``: forward, pass everything up to the tagged reply,
  then stall until ``release()``.

A rule's ``fired`` event is set when its command arrives, ``done`` when the
server's tagged reply to it has reached the relay.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Rule:
    pattern: str
    action: str
    nth: int = 1
    every: bool = False
    after: int = 0
    seen: int = 0
    fired: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class _Link:
    """One relayed connection and what its down path must do."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.lock = threading.Lock()
        self.budget: int | None = None  # bytes still to pass before acting
        self.then: str = ""  # "cut" or "hold" once the budget is spent
        self.tag: bytes | None = None  # act right before this tagged reply
        self.tag_rule: Rule | None = None
        self.closed = False

    def cut(self) -> None:
        self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


_CAPS = re.compile(rb"^(\* CAPABILITY |\* OK \[CAPABILITY |\S+ OK \[CAPABILITY )")


class ImapRelay:
    def __init__(self, upstream_port: int, *rules: Rule, hide: tuple[str, ...] = (),
                 greeting_cut: int | None = None, port: int = 0) -> None:
        """`hide`: capabilities to remove; `greeting_cut`: close every new
        connection after that many bytes of the server's greeting (until set
        to None); `port`: where to listen (a relay coming back where an
        earlier one was)."""
        self.upstream_port = upstream_port
        self.rules = list(rules)
        self.hide = [h.encode() for h in hide]
        self.greeting_cut = greeting_cut
        self.seen: list[bytes] = []
        self.released = threading.Event()
        self.links: list[_Link] = []
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            if self.greeting_cut is not None:
                link.budget, link.then = self.greeting_cut, "cut"
            self.links.append(link)
            threading.Thread(target=self._up, args=(link,), daemon=True).start()
            threading.Thread(target=self._down, args=(link,), daemon=True).start()

    def _rule_for(self, command: bytes) -> Rule | None:
        for rule in self.rules:
            if re.search(rule.pattern.encode(), command):
                rule.seen += 1
                if rule.seen == rule.nth or (rule.every and rule.seen > rule.nth):
                    return rule
        return None

    def _up(self, link: _Link) -> None:
        buf = b""
        try:
            while True:
                chunk = link.client.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line += b"\n"
                    tag, _, command = line.partition(b" ")
                    self.seen.append(line)
                    rule = self._rule_for(command)
                    if rule is None:
                        link.server.sendall(line)
                        continue
                    rule.fired.set()
                    if rule.action == "refuse":
                        with link.lock:
                            link.client.sendall(tag + b" NO [SERVERBUG] Injected failure\r\n")
                    elif rule.action == "cut":
                        link.cut()
                        return
                    elif rule.action == "hold":
                        self.released.wait()
                        if link.closed:
                            return
                        link.server.sendall(line)
                    else:
                        with link.lock:
                            if rule.action.endswith("_before_done"):
                                link.tag, link.tag_rule = tag, rule
                            else:
                                link.budget = rule.after
                                link.then = "cut" if rule.action == "cut_reply" else "hold"
                        link.server.sendall(line)
        except OSError:
            pass
        finally:
            link.cut()

    def _edit(self, data: bytes) -> tuple[bytes, bytes]:
        """The whole lines of `data` with the hidden capabilities removed,
        and the partial line left over."""
        whole, newline, partial = data.rpartition(b"\n")
        lines = (whole + newline).splitlines(keepends=True)
        for i, line in enumerate(lines):
            if _CAPS.match(line):
                for cap in self.hide:
                    line = re.sub(rb" " + re.escape(cap) + rb"(?=[ \]\r])", b"", line)
                lines[i] = line
        return b"".join(lines), partial

    def _down(self, link: _Link) -> None:
        pending = b""
        partial = b""
        try:
            while True:
                chunk = link.server.recv(65536)
                if not chunk:
                    break
                if self.hide:
                    chunk, partial = self._edit(partial + chunk)
                    if not chunk:
                        continue
                with link.lock:
                    if link.tag is not None:
                        # Look for the tagged reply at a line start.
                        data = pending + chunk
                        m = re.search(rb"(^|\r\n)" + re.escape(link.tag) + rb" ", data)
                        if m:
                            at = m.start() + len(m.group(1))
                            link.client.sendall(data[:at])
                            rule, link.tag, pending = link.tag_rule, None, b""
                            rule.done.set()
                            if rule.action == "cut_before_done":
                                link.cut()
                                return
                            then, rest = "hold", data[at:]
                        else:
                            # Keep a short tail in case the tag straddles chunks.
                            keep = len(link.tag) + 3
                            link.client.sendall(data[:-keep] if len(data) > keep else b"")
                            pending = data[-keep:] if len(data) > keep else data
                            continue
                    elif link.budget is None:
                        link.client.sendall(chunk)
                        continue
                    else:
                        now, rest = chunk[: link.budget], chunk[link.budget :]
                        link.client.sendall(now)
                        link.budget -= len(now)
                        if link.budget > 0:
                            continue
                        then = link.then
                        link.budget = None
                if then == "cut":
                    link.cut()
                    return
                self.released.wait()
                link.client.sendall(rest)
        except OSError:
            pass
        finally:
            link.cut()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        # Cut first, so that a held command is dropped, not sent late.
        for link in self.links:
            link.cut()
        self.released.set()

    def __enter__(self) -> "ImapRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
