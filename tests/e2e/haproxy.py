"""A throwaway HAProxy (Debian's package) balancing POP3 over several
popgate instances, as a cluster runs behind a load balancer.

TCP mode, round robin, ``send-proxy-v2`` to every server, on a free loopback
port.  HAProxy's connections to the servers leave from ``source``
(127.0.0.3 by default), so popgate sees a balancer address that differs
from both the client's and its own.  Each server is health-checked with a
PROXY v2 LOCAL header (``check-send-proxy``) every ``check_interval``, two
failed checks in a row mark it down (one slow answer on a busy machine
does not) and one good one up again, and a connection
refused by a server that has just gone away is dispatched to another
(``retries`` and ``option redispatch``): a stopped instance is skipped.

The runtime API (an admin socket in the instance directory) changes a
server's state by hand: ``set_state("pg0", "maint" | "drain" | "ready")``,
and ``status("pg0")`` reads what HAProxy thinks of it ("UP", "DOWN",
"MAINT", ...).  HAProxy's own log (one line per connection, naming the
server it went to) is ``log_text()``.

Stopped (SIGTERM, then SIGKILL) and its directory removed when its ``with``
block ends, or at the latest at interpreter exit.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from dovecot import die_with_parent, free_port
from reaper import Reaper

_STARTED: "Reaper[HAProxy]" = Reaper(lambda h: h.cleanup())


class HAProxy:
    def __init__(
        self,
        servers: list[int] | dict[str, int],
        *,
        source: str = "127.0.0.3",
        check_interval: str = "300ms",
        timeout_client: str = "120s",
        start: bool = True,
    ) -> None:
        """`servers`: the popgate ports, named pg0, pg1, ... or by the keys
        of a dict."""
        if not isinstance(servers, dict):
            servers = {f"pg{i}": port for i, port in enumerate(servers)}
        self.servers = dict(servers)
        self.dir = tempfile.mkdtemp(prefix="pghap-")
        _STARTED.add(self)
        self.port = free_port()
        self.socket_path = os.path.join(self.dir, "admin.sock")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.proc: subprocess.Popen | None = None
        lines = [
            "global",
            f"  stats socket {self.socket_path} mode 600 level admin",
            "  log stdout format raw local0 info",
            "  maxconn 4000",
            "defaults",
            "  mode tcp",
            "  log global",
            "  option tcplog",
            "  timeout connect 2s",
            f"  timeout client {timeout_client}",
            f"  timeout server {timeout_client}",
            "  timeout check 2s",
            "  retries 3",
            "  option redispatch",
            "frontend pop3",
            f"  bind 127.0.0.1:{self.port}",
            "  default_backend popgate",
            "backend popgate",
            "  balance roundrobin",
            f"  source {source}",
            f"  default-server send-proxy-v2 check check-send-proxy inter {check_interval} fall 2 rise 1",
        ]
        lines += [f"  server {name} 127.0.0.1:{port}" for name, port in self.servers.items()]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        if start:
            self.start()

    def start(self, timeout: float = 20) -> "HAProxy":
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["haproxy", "-f", self.config_path, "-db"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent,
            cwd=self.dir,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.log_text()[-3000:]}")
            try:
                # The frontend binds before the admin socket answers.
                if "popgate" in self.command("show backend"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"haproxy did not start:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def command(self, line: str) -> str:
        """One runtime API command on the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.socket_path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def set_state(self, server: str, state: str) -> None:
        """"ready", "drain" (no new connections, existing ones go on) or
        "maint" (out of the rotation)."""
        answer = self.command(f"set server popgate/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy refused to set {server} {state}: {answer}")

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers, by server name."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows
                if r.get("pxname") == "popgate" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def status(self, server: str) -> str:
        """What HAProxy thinks of a server: "UP", "DOWN", "MAINT", "DRAIN",
        or a transition such as "UP 1/2"."""
        return self.stats()[server]["status"]

    def wait_status(self, server: str, status: str, timeout: float = 30) -> None:
        """Waits until HAProxy's health checks (or a state set by hand)
        put `server` in `status`."""
        deadline = time.monotonic() + timeout
        while (now := self.status(server)) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy: {server} is {now}, not {status}, after {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            _STARTED.discard(self)
            if not os.environ.get("POPGATE_E2E_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "HAProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
