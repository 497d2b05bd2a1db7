"""Runs the real popgate binary for end-to-end tests.

The binary is ``$POPGATE_BIN`` or ``target/release/popgate`` (built with
``cargo build --release`` when missing). Each ``Popgate`` gets its own
directory, a config that listens on 127.0.0.1 port 0, and waits for the
``listening on ADDRESS`` log line to learn the port.

Tests share 127.0.0.1, so by default the failed-login penalty and the
per-address connection limit are off; tests of those pass ``limits``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (\d+\.\d+\.\d+\.\d+):(\d+)")
_METRICS = re.compile(r"metrics and health checks on http://[\d.]+:(\d+)")


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
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="popgate-")
        self.config_path = os.path.join(self.dir, "popgate.yaml")
        self.log_path = os.path.join(self.dir, "popgate.log")
        with open(self.config_path, "w") as f:
            f.write(
                'listeners:\n  - address: "127.0.0.1:0"\n'
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
        self.port = 0
        self.metrics_port = 0
        self.wants_metrics = metrics
        if start:
            self.start()

    def start(self, timeout: float = 20) -> "Popgate":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary(), "--config", self.config_path],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_text()
            m = _LISTENING.search(log)
            h = _METRICS.search(log)
            if m and (h or not self.wants_metrics):
                self.port = int(m.group(2))
                self.metrics_port = int(h.group(1)) if h else 0
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"popgate did not start:\n{self.log_text()[-3000:]}")

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

    def __enter__(self) -> "Popgate":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if not os.environ.get("POPGATE_E2E_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
