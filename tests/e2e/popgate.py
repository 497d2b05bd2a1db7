"""Runs the real popgate binary, for the end-to-end tests and the benchmark.

The binary is ``$POPGATE_BIN`` or ``target/release/popgate`` (built with
``cargo build --release`` when missing). Each ``Popgate`` gets its own
directory and a config that listens on 127.0.0.1 port 0, and waits for the
``listening on ADDRESS`` log line to learn the port; with a given ``port``
(the benchmark's quiet log levels print no such line) it waits for the
greeting instead.

Every instance is stopped and its directory removed when it leaves its
``with`` block, by ``cleanup()``, or at the latest by ``cleanup_all()``
(the test session's end, and interpreter exit), so nothing is left in the
temporary directory.

Tests share 127.0.0.1, so by default the failed-login penalty and the
per-address connection limit are off; tests of those pass ``limits``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from dovecot import die_with_parent
from reaper import Reaper

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (\d+\.\d+\.\d+\.\d+|\[[0-9a-f:.]+\]):(\d+)")
_METRICS = re.compile(r"metrics and health checks on http://[\d.]+:(\d+)")


# Instances not cleaned up yet; cleaned up at interpreter exit.
_STARTED: "Reaper[Popgate]" = Reaper(lambda pg: pg.cleanup())


def cleanup_all() -> None:
    """Stops every instance still running and removes every directory."""
    _STARTED.stop_all()


class PortInUse(RuntimeError):
    """The given port was taken before popgate could bind it."""


def binary() -> str:
    path = os.environ.get("POPGATE_BIN") or str(REPO / "target" / "release" / "popgate")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    return path


class Popgate:
    def __init__(
        self,
        upstream_port: int,
        *,
        extra: str = "",
        upstream_extra: str = "",
        limits: str = "  auth_penalty_max: 0s\n  connections_per_ip: 0\n",
        metrics: bool = False,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        start: bool = True,
        port: int = 0,
        binary_path: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="popgate-")
        _STARTED.add(self)
        self.config_path = os.path.join(self.dir, "popgate.yaml")
        self.log_path = os.path.join(self.dir, "popgate.log")
        with open(self.config_path, "w") as f:
            f.write(
                f'listeners:\n  - address: "127.0.0.1:{port}"\n'
                f'upstream:\n  address: "127.0.0.1:{upstream_port}"\n{upstream_extra}'
                f'log:\n  level: "{log_level}"\n'
                + (f"limits:\n{limits}" if limits else "")
                + ('metrics:\n  address: "127.0.0.1:0"\n' if metrics else "")
                + extra
            )
        self.env = dict(os.environ)
        self.env.pop("RUST_LOG", None)
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.port = port
        self.fixed_port = port
        self.binary_path = binary_path
        self.die_with_parent = die_with_parent
        self.metrics_port = 0
        self.wants_metrics = metrics
        if start:
            self.start()

    def start(self, timeout: float = 20) -> "Popgate":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary_path or binary(), "--config", self.config_path],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_text()
            m = _LISTENING.search(log)
            h = _METRICS.search(log)
            if (m or self.fixed_port and self._greets()) and (h or not self.wants_metrics):
                self.port = int(m.group(2)) if m else self.fixed_port
                self.metrics_port = int(h.group(1)) if h else 0
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        text = self.log_text()
        self.kill()
        if self.fixed_port and "in use" in text:
            raise PortInUse(f"127.0.0.1:{self.fixed_port} is in use")
        raise RuntimeError(f"popgate did not start:\n{text[-3000:]}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.fixed_port), timeout=2) as s:
                return s.recv(64).startswith(b"+OK")
        except OSError:
            return False

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL, no drain."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def cleanup(self) -> None:
        """Stops popgate (SIGTERM and its drain) and removes its directory
        (kept with POPGATE_E2E_KEEP set, for a look at a failure)."""
        try:
            self.stop()
        finally:
            _STARTED.discard(self)
            if not os.environ.get("POPGATE_E2E_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def http(self, path: str) -> tuple[int, str]:
        """GET on the sidecar: (status, body)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def status_kib(self, field: str) -> int:
        """A memory figure from /proc (VmRSS, VmHWM) in KiB."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> None:
        """Resets VmHWM so a later reading shows the peak from now on."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def cpu_seconds(self) -> float:
        """popgate's CPU time so far, user + system."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "Popgate":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
