"""Hardening that faces no client protocol: the HTTP sidecar against idle
connections, secret files others can read, core dumps, and a plaintext
upstream off this machine."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import certs
from polling import wait_for
from popgate import Popgate, binary

REPO = Path(__file__).resolve().parents[2]


def idle_keepalive(port: int, source: str) -> socket.socket | None:
    """A connection from `source` that made one keep-alive request and now
    sits idle; None when the sidecar refused or closed it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        answer = s.recv(4096)
    except OSError:
        answer = b""
    if not answer.startswith(b"HTTP/1.1 200"):
        s.close()
        return None
    return s


@contextlib.contextmanager
def held_idle(port: int, sources: list[str]):
    """Idle keep-alive connections from each of `sources` (the ones the
    sidecar kept), closed on exit."""
    held = [s for s in (idle_keepalive(port, source) for source in sources) if s]
    try:
        yield held
    finally:
        for s in held:
            s.close()


def probe(port: int) -> int | None:
    """A kubelet-style /healthz probe from 127.0.0.1: the status, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.1", 0))
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def test_healthz_answers_while_idle_keepalives_hold_every_slot(dovecot):
    with Popgate(dovecot.imap_port, metrics=True) as pg:
        # One connection per address, so only the total limit (64) acts.
        with held_idle(pg.metrics_port, [f"127.0.0.{2 + i}" for i in range(70)]) as held:
            assert len(held) >= 64
            answers = [probe(pg.metrics_port) for _ in range(24)]
            assert answers == [200] * 24


def test_one_address_cannot_take_every_slot(dovecot):
    with Popgate(dovecot.imap_port, metrics=True) as pg:
        with held_idle(pg.metrics_port, ["127.0.0.2"] * 64) as held:
            assert len(held) == 8  # metrics.max_connections_per_ip
            assert [probe(pg.metrics_port) for _ in range(8)] == [200] * 8


def check(config: str, directory: Path) -> subprocess.CompletedProcess:
    cfg = directory / "popgate.yaml"
    cfg.write_text(config)
    return subprocess.run([binary(), "--config", str(cfg), "--check"], capture_output=True, text=True)


@pytest.mark.parametrize("key", ["credentials_file", "master_password_file"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_files_others_can_read_are_refused(tmp_path, key, mode):
    files = {"credentials_file": tmp_path / "credentials", "master_password_file": tmp_path / "master"}
    files["credentials_file"].write_text("ann:s3cr3t-content\n")
    files["master_password_file"].write_text("master-secret\n")
    for f in files.values():
        f.chmod(0o600)
    config = ('listeners:\n  - address: "127.0.0.1:0"\nupstream:\n  address: "127.0.0.1:143"\n'
              f"auth:\n  credentials_file: {files['credentials_file']}\n  master_user: master\n"
              f"  master_password_file: {files['master_password_file']}\n")
    ok = check(config, tmp_path)
    assert ok.returncode == 0, ok.stderr
    files[key].chmod(mode)
    out = check(config, tmp_path)
    assert out.returncode != 0
    assert f"auth.{key}" in out.stderr and str(files[key]) in out.stderr, out.stderr
    assert f"chmod 600 {files[key]}" in out.stderr, out.stderr
    assert "s3cr3t" not in out.stderr  # never the content


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_tls_key_others_can_read_is_refused(tmp_path, mode):
    ca = certs.make_ca(str(tmp_path / "ca"))
    leaf = ca.issue("popgate")
    config = ('listeners:\n  - address: "127.0.0.1:0"\n    tls: implicit\n'
              'upstream:\n  address: "127.0.0.1:143"\n'
              f"tls:\n  certificate: {leaf.chain}\n  key: {leaf.key}\n")
    ok = check(config, tmp_path)
    assert ok.returncode == 0, ok.stderr
    os.chmod(leaf.key, mode)
    out = check(config, tmp_path)
    assert out.returncode != 0
    assert "tls:" in out.stderr and leaf.key in out.stderr, out.stderr
    assert f"chmod 600 {leaf.key}" in out.stderr, out.stderr
    assert "PRIVATE KEY" not in out.stderr  # never the content


def test_core_dumps_are_off(dovecot):
    # A process that may dump has its /proc files owned by its own user; a
    # non-dumpable one has them owned by root. So run popgate as nobody, from
    # a directory nobody can enter (the test run's own TMPDIR is private, and
    # the checkout may be under /root): a copy of the binary, and its config.
    directory = Path(tempfile.mkdtemp(prefix="popgate-dump-", dir="/var/tmp"))
    try:
        directory.chmod(0o755)
        program = directory / "popgate"
        shutil.copy(binary(), program)
        cfg = directory / "popgate.yaml"
        cfg.write_text('listeners:\n  - address: "127.0.0.1:0"\n'
                       f'upstream:\n  address: "127.0.0.1:{dovecot.imap_port}"\n')
        cfg.chmod(0o644)
        log = directory / "log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(program), "--config", str(cfg)], stdout=out, stderr=out,
                                    user=65534, group=65534, extra_groups=[])
        try:
            wait_for(lambda: "listening on" in log.read_text(), 20, "popgate to listen")
            owner = os.stat(f"/proc/{proc.pid}/status").st_uid
            assert owner == 0, f"/proc/{proc.pid}/status belongs to uid {owner}: the process is dumpable"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_systemd_unit_allows_no_core_files():
    unit = (REPO / "deploy" / "popgate.service").read_text()
    assert "\nLimitCORE=0\n" in unit


def test_plaintext_upstream_off_this_machine_is_warned_at_start(tmp_path):
    # TEST-NET-1: never answers, which is fine for a start-up log line.
    cfg = tmp_path / "popgate.yaml"
    cfg.write_text('listeners:\n  - address: "127.0.0.1:0"\n'
                   'upstream:\n  address: "192.0.2.1:143"\n  connect_timeout: 1s\n')
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary(), "--config", str(cfg)], stdout=out, stderr=out)
    try:
        wait_for(lambda: "listening on" in log.read_text(), 20, "popgate to listen")
        text = log.read_text()
        assert "WARN" in text and "upstream.tls: none sends every password to 192.0.2.1:143" in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_plaintext_upstream_on_loopback_is_not_warned(dovecot):
    with Popgate(dovecot.imap_port) as pg:
        assert "sends every password" not in pg.log_text()
