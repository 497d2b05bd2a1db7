"""A throwaway redis-server (Debian's package) on a free loopback port.

Append-only persistence with an fsync per write (``appendfsync`` says
otherwise), as a cluster's state store would run: ``stop()`` then ``start()`` (or ``kill()`` then ``start()``) brings
back what was written, on the same port, so popgate's reconnects find it.
Stopped and its directory removed when its ``with`` block ends, or at the
latest at interpreter exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from dovecot import die_with_parent
from reaper import Reaper

_STARTED: "Reaper[RedisServer]" = Reaper(lambda r: r.cleanup())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(
        self, *, password: str | None = None, appendfsync: str = "always", start: bool = True
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="pgredis-")
        _STARTED.add(self)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "redis.log")
        conf = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.dir}",
            "appendonly yes",
            f"appendfsync {appendfsync}",
            'save ""',
            "daemonize no",
            f"logfile {self.log_path}",
        ]
        if password:
            conf.append(f"requirepass {password}")
        self.conf_path = os.path.join(self.dir, "redis.conf")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", self.conf_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._log_tail()}")
            try:
                if self.cli("PING") == "PONG":
                    return self
            except (OSError, subprocess.CalledProcessError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def cli(self, *args: str) -> str:
        """One command through redis-cli; its raw output, stripped."""
        cmd = ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.password:
            cmd += ["-a", self.password]
        out = subprocess.run(
            cmd + ["--raw", *args], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()

    def keys(self, pattern: str = "*") -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k]

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM: redis-server finishes its append-only file and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        _STARTED.discard(self)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
