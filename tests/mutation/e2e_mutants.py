#!/usr/bin/env python3
"""Mutation check for the end-to-end suite: does each README guarantee have
a test that fails when the guarantee breaks?

For every patch in `patches.py` (a small change to popgate's source that
breaks one guarantee) this script, in a scratch `git worktree` of HEAD:
applies the patch (its old text must occur exactly once, else the patch is
reported *stale*), builds `cargo build --release` (all mutants share one
target directory, `target/mutants` in the checkout, so rebuilds are
incremental), runs that patch's end-to-end tests against the mutant binary
(`POPGATE_BIN`), and records *killed* (a test failed), *survived* (every
test passed: a test is missing), *build failed*, or *error* (pytest itself
failed: a test id that no longer exists, say). Then it reverts the patch.
The tests are the checkout's (`tests/e2e`, working tree included). Before
the first patch it runs every selected test against the unpatched build:
a test that fails there would "kill" a patch without telling anything, so
the run stops.

    .venv/bin/python tests/mutation/e2e_mutants.py              # every patch
    .venv/bin/python tests/mutation/e2e_mutants.py --only top-marks-seen
    .venv/bin/python tests/mutation/e2e_mutants.py --list       # names; do the patches apply?
    .venv/bin/python tests/mutation/e2e_mutants.py --baseline   # only the unpatched build's tests

It prints a table and exits 1 if any patch survived, was stale, did not
build or could not be tested; 2 if the unpatched tree does not build or
fails a test. A run of the whole list also writes the table
to `tests/mutation/E2E_RESULTS.md` with the date and commit. It takes a
few minutes per patch (a release build and a few e2e tests each), so it is
not part of `scripts/test.sh` or CI. Builds and tests run under `nice`."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patches import PATCHES, Patch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "mutation" / "E2E_RESULTS.md"
TARGET = ROOT / "target" / "mutants"
NICE = ["nice", "-n", "10"]
BUILD_TIMEOUT = 1800
TEST_TIMEOUT = 900


@dataclass
class Outcome:
    patch: Patch
    result: str  # killed, survived, stale, build failed, error
    detail: str = ""
    seconds: float = 0.0


def sh(cmd: list[str], cwd: Path, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Runs cmd in its own process group; a timeout kills the whole group."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace", start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return -1, out + f"\n(timed out after {timeout:.0f} s)"


def occurrences(tree: Path, patch: Patch) -> list[int]:
    text = (tree / patch.file).read_text()
    return [text.count(old) for old, _ in patch.hunks()]


def apply(tree: Path, patch: Patch) -> bool:
    """Applies every hunk when each old text occurs exactly once."""
    path = tree / patch.file
    if occurrences(tree, patch) != [1] * len(patch.hunks()):
        return False
    text = path.read_text()
    for old, new in patch.hunks():
        text = text.replace(old, new, 1)
    path.write_text(text)
    return True


def revert(tree: Path) -> None:
    subprocess.run(["git", "checkout", "--quiet", "--", "."], cwd=tree, check=True)


def build(tree: Path) -> tuple[bool, str]:
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET))
    code, out = sh(NICE + ["cargo", "build", "--release", "--locked", "--quiet"], tree,
                   BUILD_TIMEOUT, env)
    return code == 0, out


def failed_test(out: str, spec: str) -> str:
    for line in out.splitlines():
        if line.startswith("FAILED ") or line.startswith("ERROR "):
            return line.split(" ", 1)[1].split(" - ", 1)[0].strip()
    return spec


def run_spec(spec: str, binary: Path, log) -> tuple[int, str]:
    """One pytest run (a node id, or a file with -k) against `binary`."""
    python = ROOT / ".venv" / "bin" / "python"
    env = dict(os.environ, POPGATE_BIN=str(binary))
    cmd = NICE + [str(python), "-m", "pytest", *shlex.split(spec),
                  "-x", "-q", "-rfE", "-p", "no:cacheprovider"]
    code, out = sh(cmd, ROOT, TEST_TIMEOUT, env)
    log.write(f"$ POPGATE_BIN={binary} {shlex.join(cmd)}\n{out}\n")
    log.flush()
    return code, out


def baseline(patches: list[Patch], binary: Path, log) -> list[str]:
    """Runs every spec once against the unpatched build; returns the failing ones."""
    specs = list(dict.fromkeys(spec for p in patches for spec in p.tests))
    failing = []
    for spec in specs:
        code, _ = run_spec(spec, binary, log)
        print(f"  {'passed' if code == 0 else f'FAILED (exit {code})'}: {spec}", flush=True)
        if code != 0:
            failing.append(spec)
    return failing


def run_tests(patch: Patch, binary: Path, log) -> tuple[str, str]:
    """Runs the patch's tests one spec at a time; stops at the first failure."""
    for spec in patch.tests:
        code, out = run_spec(spec, binary, log)
        if code == 1:
            return "killed", failed_test(out, spec)
        if code == -1:
            return "killed", f"{spec} (timed out)"
        if code != 0:
            return "error", f"pytest exit {code}: {spec}"
    return "survived", ""


def table(outcomes: list[Outcome]) -> str:
    rows = ["| patch | guarantee it breaks | result | caught by | build+test s |",
            "|---|---|---|---|---|"]
    for o in outcomes:
        guarantee = o.patch.guarantee.replace("|", "\\|")
        detail = f"`{o.detail}`" if o.result == "killed" else o.detail
        rows.append(f"| `{o.patch.name}` | {guarantee} | **{o.result}** | {detail} | {o.seconds:.0f} |")
    return "\n".join(rows)


def write_results(outcomes: list[Outcome], commit: str, total: int, elapsed: float,
                  specs: int) -> None:
    counts = {r: sum(o.result == r for o in outcomes)
              for r in ("killed", "survived", "stale", "build failed", "error")}
    summary = ", ".join(f"{n} {r}" for r, n in counts.items() if n)
    done = "" if len(outcomes) == total else f" (in progress: {len(outcomes)} of {total} so far)"
    RESULTS.write_text(
        "# End-to-end mutation check: results\n\n"
        f"Run of `tests/mutation/e2e_mutants.py` on {datetime.date.today().isoformat()}, "
        f"commit `{commit}`{done}: {summary}; {elapsed / 60:.0f} minutes in all "
        "on a shared 2-core machine under load. "
        f"First, all {specs} test runs passed against the unpatched build.\n\n"
        "Each patch is a small change to popgate's source that breaks the guarantee "
        "named; *killed* means the end-to-end test named failed against the mutant "
        "binary. The patches, and the tests each one runs, are in "
        "[`patches.py`](patches.py).\n\n"
        f"{table(outcomes)}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these patches only")
    ap.add_argument("--list", action="store_true", help="list the patches and whether they apply")
    ap.add_argument("--baseline", action="store_true",
                    help="only run the selected patches' tests against the unpatched tree")
    args = ap.parse_args()

    names = {p.name for p in PATCHES}
    unknown = set(args.only or ()) - names
    if unknown:
        ap.error(f"unknown patch(es): {', '.join(sorted(unknown))}")
    selected = [p for p in PATCHES if not args.only or p.name in args.only]

    if args.list:
        for p in selected:
            found = occurrences(ROOT, p)
            state = "applies" if found == [1] * len(found) else f"STALE (old text found {found} times)"
            print(f"{p.name:32} {state:12} {p.guarantee}")
        return 0

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="popgate-mutants-"))
    tree = scratch / "tree"
    TARGET.mkdir(parents=True, exist_ok=True)
    log_path = TARGET / "e2e_mutants.log"
    binary = TARGET / "release" / "popgate"
    outcomes: list[Outcome] = []
    started = time.monotonic()
    subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(tree), "HEAD"],
                   cwd=ROOT, check=True)
    try:
        with open(log_path, "w") as log:
            print(f"scratch tree {tree} at {commit}; target {TARGET}; log {log_path}", flush=True)
            t = time.monotonic()
            ok, out = build(tree)
            if not ok:
                print(f"the unpatched tree does not build:\n{out}", file=sys.stderr)
                return 2
            print(f"unpatched build: {time.monotonic() - t:.0f} s", flush=True)
            unpatched = TARGET / "popgate-unpatched"
            shutil.copy2(binary, unpatched)
            print("the tests against the unpatched build:", flush=True)
            log.write("\n===== unpatched =====\n")
            failing = baseline(selected, unpatched, log)
            specs = len({spec for p in selected for spec in p.tests})
            if failing or args.baseline:
                if failing:
                    print(f"{len(failing)} of {specs} test runs fail without any patch; "
                          "fix them first", file=sys.stderr)
                return 2 if failing else 0
            for p in selected:
                t = time.monotonic()
                log.write(f"\n===== {p.name} =====\n")
                if not apply(tree, p):
                    outcomes.append(Outcome(p, "stale", f"old text found {occurrences(tree, p)} times"))
                else:
                    ok, out = build(tree)
                    log.write(out)
                    if not ok:
                        tail = out.strip().splitlines()[-1:] or [""]
                        outcomes.append(Outcome(p, "build failed", tail[0], time.monotonic() - t))
                    else:
                        result, detail = run_tests(p, binary, log)
                        outcomes.append(Outcome(p, result, detail, time.monotonic() - t))
                    revert(tree)
                o = outcomes[-1]
                print(f"{o.patch.name}: {o.result} {o.detail} ({o.seconds:.0f} s)", flush=True)
                if not args.only:
                    write_results(outcomes, commit, len(selected), time.monotonic() - started,
                                  specs)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(table(outcomes))
    bad = [o for o in outcomes if o.result != "killed"]
    for o in bad:
        print(f"NOT KILLED: {o.patch.name}: {o.result} {o.detail}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
