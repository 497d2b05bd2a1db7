"""The popgate binary a run measures: target/release/popgate, built when
missing or older than the sources; a given binary; or a git revision,
built apart in bench/.build/."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def newest_source_mtime() -> float:
    newest = 0.0
    for top in ("src",):
        for dirpath, _dirs, files in os.walk(REPO / top):
            for name in files:
                try:
                    newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    pass
    for name in ("Cargo.toml", "Cargo.lock"):
        try:
            newest = max(newest, (REPO / name).stat().st_mtime)
        except OSError:
            pass
    return newest


def ensure_binary(args: argparse.Namespace, log) -> tuple[str, float]:
    """The popgate binary, built with cargo when missing or older than the
    sources; returns (path, seconds spent building)."""
    if args.popgate_bin:
        if not os.access(args.popgate_bin, os.X_OK):
            sys.exit(f"bench: {args.popgate_bin} is not an executable")
        return args.popgate_bin, 0.0
    if args.rev:
        return build_rev(args.rev, log)
    binary = REPO / "target" / "release" / "popgate"
    if binary.exists() and binary.stat().st_mtime >= newest_source_mtime():
        return str(binary), 0.0
    why = "missing" if not binary.exists() else "older than src/"
    log(f"target/release/popgate is {why}: cargo build --release")
    t0 = time.monotonic()
    rc = subprocess.run(["cargo", "build", "--release"], cwd=REPO).returncode
    if rc != 0 or not binary.exists():
        sys.exit("bench: cargo build --release failed")
    return str(binary), time.monotonic() - t0


def build_rev(rev: str, log) -> tuple[str, float]:
    """Builds popgate from a git revision: ``git archive`` into
    bench/.build/src-<commit>/, ``cargo build --release`` with the target
    directory bench/.build/target (shared between revisions, so only
    popgate itself is rebuilt after the first time)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    if not commit:
        sys.exit(f"bench: {rev!r} is not a git revision")
    build = BENCH / ".build"
    src = build / f"src-{commit[:12]}"
    out = build / f"popgate-{commit[:12]}"
    if out.exists():
        return str(out), 0.0
    t0 = time.monotonic()
    log(f"building popgate {commit[:12]} ({rev}) in {src.relative_to(REPO)}")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=REPO,
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        sys.exit(f"bench: git archive {commit} failed")
    env = dict(os.environ, CARGO_TARGET_DIR=str(build / "target"))
    rc = subprocess.run(["cargo", "build", "--release", "--bin", "popgate"], cwd=src,
                        env=env).returncode
    if rc != 0:
        sys.exit(f"bench: cargo build --release of {commit[:12]} failed")
    shutil.copy2(build / "target" / "release" / "popgate", out)
    shutil.rmtree(src, ignore_errors=True)
    return str(out), time.monotonic() - t0
