"""The benchmark's report: the machine, the table, RESULTS.md and the plot."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    key: str                   # "a", "b", ..., "e-mem", "i-10k"
    title: str
    unit: str
    native: float | None       # median (None: popgate only)
    popgate: float | None      # median
    kind: str                  # "rate" (higher is better), "time" (lower is better), "mem" (lower is better)
    target: float | None       # ratio target for rate/time rows; limit for mem rows
    target_text: str
    note: str = ""
    skipped: str = ""          # why there is no figure
    label: str = ""            # short label for the plot
    nginx: float | None = None  # median through nginx's mail proxy, the second reference

    @property
    def ratio(self) -> float | None:
        """popgate/native for rates, native/popgate for times: >1 always
        means popgate did better."""
        if self.native is None or self.popgate is None or self.kind == "mem":
            return None
        if self.kind == "rate":
            return self.popgate / self.native if self.native else None
        return self.native / self.popgate if self.popgate else None

    @property
    def nginx_ratio(self) -> float | None:
        """nginx against native, oriented like ``ratio`` (>1: nginx did
        better than native): the cost of a peer proxy, beside popgate's."""
        if self.native is None or self.nginx is None or self.kind == "mem":
            return None
        if self.kind == "rate":
            return self.nginx / self.native if self.native else None
        return self.native / self.nginx if self.nginx else None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.kind == "mem":
            return None if self.popgate is None else self.popgate < self.target
        r = self.ratio
        return None if r is None else r >= self.target

    def shortfall(self) -> str:
        """How far a missed target is missed, in words."""
        if self.met is not False:
            return ""
        if self.kind == "mem":
            return (f"{fmt(self.popgate)} {self.unit} against a limit of "
                    f"{fmt(self.target)} {self.unit} ({self.popgate / self.target:.2f}x the limit)")
        r = self.ratio
        assert r is not None and self.target
        pct = (1 - r / self.target) * 100
        if self.kind == "time":
            return (f"popgate took {self.popgate:.3g} s, native {self.native:.3g} s: "
                    f"{self.popgate / self.native:.2f}x native's time, allowed "
                    f"{1 / self.target:.2f}x ({pct:.0f}% short)")
        return f"ratio {r:.2f}x against {self.target:.2f}x ({pct:.0f}% short)"


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def met_text(m: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[m]


# ---------------------------------------------------------------- machine


def _run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd,
                              timeout=30).stdout.strip()
    except Exception:
        return ""


def machine_info(repo: Path, popgate_bin: str, rev: str | None = None,
                 given_bin: bool = False) -> dict[str, str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    if rev:
        commit = _run(["git", "rev-parse", rev + "^{commit}"], cwd=str(repo)) + f" ({rev}, built with --rev)"
    elif given_bin:
        commit = "unknown (binary given with --popgate-bin; HEAD is " + _run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=str(repo)) + ")"
    else:
        commit = _run(["git", "rev-parse", "HEAD"], cwd=str(repo))
        dirty = _run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                     cwd=str(repo))
        if commit and dirty:
            commit += " plus the uncommitted changes to src/ or Cargo files of the working tree"
    load = ""
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count() or "?"),
        "cpu": cpu or platform.processor() or "?",
        "memory": mem or "?",
        "kernel": platform.release(),
        "os": _os_name(),
        "dovecot": _run(["dovecot", "--version"]) or "?",
        "python": platform.python_version(),
        "rustc": _run(["rustc", "--version"]),
        "popgate_commit": commit or "?",
        "popgate_binary": popgate_bin,
        "loadavg_start": load,
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


# ------------------------------------------------------------------ table

HEADER = ("Workload", "Unit", "Native", "popgate", "Ratio", "Target", "Met")
# With nginx figures: nginx's own column and ratio after popgate's.
HEADER_NGINX = ("Workload", "Unit", "Native", "popgate", "Ratio", "nginx", "nginx ratio",
                "Target", "Met")


def has_nginx(rows: list[Row]) -> bool:
    return any(r.nginx is not None for r in rows)


def table_rows(rows: list[Row]) -> list[tuple[str, ...]]:
    out = []
    with_nginx = has_nginx(rows)
    for r in rows:
        ratio, nratio = r.ratio, r.nginx_ratio
        cells = [
            f"{r.key}: {r.title}",
            r.unit,
            fmt(r.native) if r.kind != "mem" else "—",
            fmt(r.popgate) if not r.skipped else "skipped",
            f"{ratio:.2f}x" if ratio is not None else "—",
        ]
        if with_nginx:
            cells += [fmt(r.nginx), f"{nratio:.2f}x" if nratio is not None else "—"]
        cells += [r.target_text, met_text(r.met) if not r.skipped else "—"]
        out.append(tuple(cells))
    return out


def text_table(rows: list[Row]) -> str:
    header = HEADER_NGINX if has_nginx(rows) else HEADER
    data = [header] + table_rows(rows)
    widths = [max(len(row[i]) for row in data) for i in range(len(header))]
    right = {2, 3, 4, 5, 6} if has_nginx(rows) else {2, 3, 4}
    lines = []
    for n, row in enumerate(data):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[Row]) -> str:
    data = table_rows(rows)
    header = HEADER_NGINX if has_nginx(rows) else HEADER
    aligns = ["---", "---"] + ["---:"] * (len(header) - 4) + ["---", "---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    for row in data:
        cells = list(row)
        if cells[-1] == "NO":
            cells[-1] = "**NO**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CONVENTION = (
    "Ratio: popgate/native for throughputs (MB/s, messages/s, sessions/s) and "
    "native/popgate for times (s), so a ratio above 1 always means popgate did "
    "better. Memory rows are popgate's alone; their target is an upper limit. "
    "nginx (when shown): nginx's mail proxy in front of the same Dovecot's POP3, "
    "its ratio oriented the same way against native."
)


# ------------------------------------------------------------------- plot


def ensure_matplotlib() -> bool:
    """matplotlib, installed from PyPI with pip when missing.  False when it
    cannot be had (the plot is then drawn without it)."""
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    print("bench: installing matplotlib with pip (for the plot)", file=sys.stderr)
    rc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                         "--disable-pip-version-check", "matplotlib"]).returncode
    if rc != 0:
        print("bench: pip could not install matplotlib; drawing a plain plot",
              file=sys.stderr)
        return False
    importlib.invalidate_caches()
    return importlib.util.find_spec("matplotlib") is not None


def plot(rows: list[Row], path: Path, title: str) -> None:
    speed = [r for r in rows if r.kind in ("rate", "time") and r.ratio is not None
             and r.target is not None]
    mem = [r for r in rows if r.kind == "mem" and r.popgate is not None and r.target]
    if ensure_matplotlib():
        _plot_matplotlib(speed, mem, path, title)
    else:
        _plot_plain(speed, mem, path)


def _plot_matplotlib(speed: list[Row], mem: list[Row], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2),
                             gridspec_kw={"width_ratios": [max(len(speed), 1), max(len(mem), 1) + 1]})
    ax = axes[0]
    xs = range(len(speed))
    ratios = [r.ratio for r in speed]
    colors = ["#2e7d32" if r.met else "#c62828" for r in speed]
    ax.bar(xs, ratios, color=colors, width=0.6)
    for x, r in zip(xs, speed):
        ax.hlines(r.target, x - 0.42, x + 0.42, colors="black", linewidth=2.2)
        ax.text(x, max(r.ratio, r.target) + 0.02, f"{r.ratio:.2f}x", ha="center",
                va="bottom", fontsize=9)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r.key}\n{r.label or r.title}" for r in speed], fontsize=8)
    ax.set_ylabel("ratio (>1: popgate better)")
    ax.set_title("speed vs native Dovecot POP3 (black bar: target)")
    ax.set_ylim(0, max([1.2] + [r.ratio * 1.15 for r in speed] + [r.target * 1.15 for r in speed]))

    ax = axes[1]
    xs = range(len(mem))
    fracs = [max(0.0, r.popgate / r.target) for r in mem]   # a shrinking figure is 0
    colors = ["#2e7d32" if r.met else "#c62828" for r in mem]
    ax.bar(xs, fracs, color=colors, width=0.6)
    ax.axhline(1.0, color="black", linewidth=2.2)
    for x, r, f in zip(xs, mem, fracs):
        ax.text(x, f + 0.01, f"{fmt(r.popgate)} {r.unit}\nlimit {fmt(r.target)}",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r.key}\n{r.label or r.title}" for r in mem], fontsize=8)
    ax.set_ylabel("fraction of the limit (<1: within)")
    ax.set_title("popgate memory vs limit (black line)")
    ax.set_ylim(0, max([1.25] + [f * 1.3 for f in fracs]))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_plain(speed: list[Row], mem: list[Row], path: Path) -> None:
    """A PNG without matplotlib: one bar per row (speed ratios, then memory
    as a fraction of its limit), green when the target is met, red when
    not, with a black mark at the target.  No text."""
    bars = [(r.ratio, r.target, r.met) for r in speed] + [
        (r.popgate / r.target, 1.0, r.met) for r in mem]
    w, h, pad, bw = 60 * max(len(bars), 1) + 40, 300, 20, 36
    top = max([1.2] + [b[0] * 1.1 for b in bars] + [b[1] * 1.1 for b in bars])
    px = [[(255, 255, 255)] * w for _ in range(h)]

    def y_of(v: float) -> int:
        return h - pad - int((h - 2 * pad) * v / top)

    for x in range(pad, w - pad):            # the 1.0 line
        px[y_of(1.0)][x] = (150, 150, 150)
    for i, (v, t, ok) in enumerate(bars):
        x0 = pad + 10 + i * 60 + (20 if i >= len(speed) else 0) // 2
        color = (46, 125, 50) if ok else (198, 40, 40)
        for y in range(y_of(v), h - pad):
            for x in range(x0, min(x0 + bw, w)):
                px[y][x] = color
        for dy in (0, 1, 2):
            yy = min(h - 1, y_of(t) + dy)
            for x in range(max(0, x0 - 4), min(w, x0 + bw + 4)):
                px[yy][x] = (0, 0, 0)
    raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in px)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path.write_bytes(png)


def strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)
