"""The container image of deploy/Dockerfile, built and run with podman.

No registry is reachable from the test machines, so the test makes the
runtime base image itself: an image from scratch holding the shared
libraries the release binary needs (as `ldd` lists them), CA certificates
and the user 65532. The Dockerfile's runtime stage is then built on it
(`RUNTIME_IMAGE`, `BINARY_FROM=prebuilt`, `--pull=never`) and run against
the test Dovecot with a mounted config: it answers POP3 as Dovecot's own
POP3 does, runs as uid 65532, and on `podman stop` drains and exits 0.

The runtime is runc (crun fails on some kernels' cgroups), and the limits
are given explicitly, as root here cannot raise them. The test skips only
where podman cannot run containers at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from corpus import simple_message, tricky_messages
from dovecot import free_port
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import REPO, binary

PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def _podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


# podman's shared-memory lock file, made by its first use on a machine.
PODMAN_LOCK = Path("/dev/shm/libpod_lock")


@pytest.fixture(scope="module")
def podman():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install-deps.sh installs podman, buildah and runc)")
    made_lock = not PODMAN_LOCK.exists()
    info = subprocess.run([*PODMAN, "info"], capture_output=True, text=True, timeout=120)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run containers on this machine: {info.stderr.strip()[-500:]}")
    yield
    # Leave /dev/shm as found: the lock file goes if this test made it and
    # no container is left to need it.
    left = subprocess.run([*PODMAN, "ps", "-aq"], capture_output=True, text=True, timeout=120)
    if made_lock and left.returncode == 0 and not left.stdout.strip():
        PODMAN_LOCK.unlink(missing_ok=True)


def _shared_libraries(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=>\s*(/\S+)", out) + re.findall(r"^\s*(/\S+)\s+\(", out, re.M)
    assert libs, out
    return sorted(set(libs))


def _base_image(work: Path, exe: str, tag: str) -> None:
    """An image from scratch with what the release binary needs to run."""
    root = work / "base" / "rootfs"
    for lib in _shared_libraries(exe):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    etc = root / "etc"
    (etc / "ssl" / "certs").mkdir(parents=True)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", etc / "ssl" / "certs" / "ca-certificates.crt")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    (work / "base" / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    _podman("build", "--pull=never", "-t", tag, "-f", str(work / "base" / "Containerfile"), str(work / "base"))


def _context(work: Path, exe: str) -> Path:
    """The Dockerfile's build context, with only what the runtime stage
    copies (the repository root would send gigabytes of target/)."""
    ctx = work / "ctx"
    (ctx / "deploy").mkdir(parents=True)
    (ctx / "target" / "release").mkdir(parents=True)
    shutil.copy2(REPO / "deploy" / "Dockerfile", ctx / "deploy" / "Dockerfile")
    shutil.copy2(REPO / "deploy" / "popgate.yaml", ctx / "deploy" / "popgate.yaml")
    shutil.copy2(exe, ctx / "target" / "release" / "popgate")
    return ctx


def test_the_image_serves_pop3_as_uid_65532_and_stops_cleanly(podman, dovecot, user, tmp_path):
    for raw in [simple_message(1), *tricky_messages()[:3]]:
        user.deliver(raw)
    exe = binary()
    dangling_before = set(_dangling())
    run_id = uuid.uuid4().hex[:10]
    base, image, name = f"localhost/popgate-base:{run_id}", f"localhost/popgate:{run_id}", f"popgate-{run_id}"
    try:
        _base_image(tmp_path, exe, base)
        ctx = _context(tmp_path, exe)
        _podman("build", "--pull=never", "-f", str(ctx / "deploy" / "Dockerfile"),
                "--build-arg", f"RUNTIME_IMAGE={base}", "--build-arg", "BINARY_FROM=prebuilt",
                "-t", image, str(ctx))
        port = free_port()
        config = tmp_path / "popgate.yaml"
        config.write_text(f'listeners:\n  - address: "127.0.0.1:{port}"\n'
                          f'upstream:\n  address: "127.0.0.1:{dovecot.imap_port}"\n'
                          "shutdown:\n  drain_timeout: 3s\n")
        config.chmod(0o644)
        _podman("run", "-d", "--name", name, "--network", "host", *LIMITS,
                "-v", f"{config}:/etc/popgate/popgate.yaml:ro", image)
        wait_for(lambda: "listening on" in _podman("logs", name).stderr, 60, "popgate in the container to listen")

        def session(p: int) -> list[bytes]:
            with Pop3Raw(p) as c:
                assert c.login(user.name, user.password).startswith(b"+OK")
                answers = [c.answer(cmd) for cmd in ("STAT", "LIST", "UIDL", "RETR 1", "RETR 4", "TOP 2 0")]
                assert c.answer("QUIT").startswith(b"+OK")
            return answers

        assert session(port) == session(dovecot.pop3_port)
        pid = int(_podman("inspect", "-f", "{{.State.Pid}}", name).stdout)
        uids = re.search(r"^Uid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M)
        assert uids and set(uids.group(1).split()) == {"65532"}, uids

        # A session still open at the stop is closed at the end of the drain.
        idle = Pop3Raw(port)
        assert idle.login(user.name, user.password).startswith(b"+OK")
        _podman("stop", "-t", "60", name, timeout=120)
        assert _podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        log = _podman("logs", name).stderr
        assert "SIGTERM received" in log and "drain time over" in log and "stopped" in log, log[-2000:]
        idle.close()
    finally:
        _podman("rm", "-f", name, check=False)
        _podman("rmi", "-f", image, base, check=False)
        # The build's intermediate stage images, and only those of this run.
        made = set(_dangling()) - dangling_before
        if made:
            _podman("rmi", "-f", *made, check=False)


def _dangling() -> list[str]:
    return _podman("images", "-q", "--filter", "dangling=true", check=False).stdout.split()
