"""r: what the Redis state store costs.  The reference is popgate itself
without a ``state`` section (the popgate of a-g), side by side in the same
interleaved rounds: d's sequential logins, e's concurrent ones and f's warm
listing of the big mailbox, through a popgate on a throwaway redis-server
(tests/e2e/redisserver.py: append-only file, ``appendfsync always``) and,
for reference, through one on the embedded store in a fresh directory.

Each round measures every side once, in an order that rotates from round
to round (off, redis, embedded; redis, embedded, off; ...), so no side is
always first after the others' work.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile

from popgate import Popgate
from report import Row, fmt
from workloads import Sample, concurrent_sessions, listing, seq_sessions, start_popgate

# side -> (samples key suffix, label in the tables)
SIDES = {"redis": ("", "Redis store"), "embedded": ("-emb", "embedded store")}


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StorePopgates:
    """A redis-server, a popgate on it and a popgate on the embedded store,
    all stopped by ``cleanup()``."""

    def __init__(self, binary: str, upstream_port: int, log_level: str,
                 embedded: bool = True, appendfsync: str = "always") -> None:
        from redisserver import RedisServer

        self.redis = RedisServer(appendfsync=appendfsync)
        self.dir = tempfile.mkdtemp(prefix="popgate-bench-state-")
        self.pgs: dict[str, Popgate] = {}
        try:
            self.pgs["redis"] = start_popgate(
                binary, upstream_port, log_level=log_level,
                extra=f'state:\n  redis:\n    url: "{self.redis.url}"\n')
            if embedded:
                self.pgs["embedded"] = start_popgate(
                    binary, upstream_port, log_level=log_level,
                    extra=f"state:\n  path: {self.dir}\n")
        except BaseException:
            self.cleanup()
            raise

    def commands(self) -> dict[str, int]:
        """Calls so far by command (INFO commandstats), without the PINGs
        of popgate's health check and the INFO and SCAN of this benchmark."""
        out = {}
        for line in self.redis.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, stats = line[len("cmdstat_"):].partition(":")
                if name not in ("ping", "info", "scan", "strlen", "dbsize", "command"):
                    out[name] = int(stats.split(",")[0].split("=")[1])
        return out

    def redis_cpu(self) -> float:
        assert self.redis.proc is not None
        return proc_cpu_seconds(self.redis.proc.pid)

    def cleanup(self) -> None:
        for pg in self.pgs.values():
            pg.cleanup()
        self.pgs.clear()
        self.redis.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(runner, log, dv, pg_off: Popgate, sess_user: str, huge_user: str,
        password: str, n: int, embedded: bool = True, appendfsync: str = "always") -> None:
    """Fills runner.samples["r-d"], ["r-e"], ["r-f"] (native = popgate
    without state, popgate = the Redis store) and, with ``embedded``, the
    same keys with "-emb" (popgate = the embedded store), plus
    runner.r_result with the size of the UIDL memory in Redis."""
    a = runner.args
    st = StorePopgates(runner.binary, dv.imap_port, a.popgate_log_level, embedded, appendfsync)
    try:
        pgs = {"off": pg_off, **st.pgs}
        ports = {side: pg.port for side, pg in pgs.items()}
        log(f"r: the state store: popgate on Redis ({st.redis.url}, appendfsync {appendfsync})"
            + (" and on the embedded store" if embedded else "") + " vs popgate without state")

        def e_run(side: str) -> Sample:
            pg = pgs[side]
            pg.reset_peak()
            s = concurrent_sessions(ports[side], sess_user, password, a.clients, a.conc_sessions)
            s.extra["hwm_kib"] = pg.status_kib("VmHWM")
            return s

        workloads = [
            ("r-d", a.seq_sessions, f"{a.seq_sessions} sequential sessions",
             lambda side: seq_sessions(ports[side], sess_user, password, a.seq_sessions),
             lambda side: seq_sessions(ports[side], sess_user, password, 5)),
            ("r-e", a.conc_sessions, f"{a.conc_sessions} sessions by {a.clients} concurrent clients",
             e_run,
             lambda side: concurrent_sessions(ports[side], sess_user, password,
                                              a.clients, a.clients)),
            ("r-f", 1, f"warm UIDL+LIST of {n:,} messages",
             lambda side: listing(ports[side], huge_user, password, n),
             # The first login on a store fingerprints every message; the
             # second is the first warm one.
             lambda side: (listing(ports[side], huge_user, password, n),
                           listing(ports[side], huge_user, password, n))),
        ]
        order = list(pgs)
        commands: dict[str, dict[str, float]] = {}
        for key, per, what, measure, warm in workloads:
            log(f"r: {what}")
            for side in order:
                warm(side)
            res: dict[str, list[Sample]] = {side: [] for side in order}
            calls: dict[str, int] = {}
            for r in range(a.rounds):
                for side in order[r % len(order):] + order[:r % len(order)]:
                    k0 = st.commands() if side == "redis" else {}
                    c0 = pgs[side].cpu_seconds()
                    rc0 = st.redis_cpu()
                    s = measure(side)
                    s.server_cpu = pgs[side].cpu_seconds() - c0
                    s.extra["redis_cpu"] = st.redis_cpu() - rc0
                    if side == "redis":
                        for cmd, c in st.commands().items():
                            calls[cmd] = calls.get(cmd, 0) + c - k0.get(cmd, 0)
                    res[side].append(s)
                log(f"  {key} round {r + 1}/{a.rounds}: "
                    + ", ".join(f"{side} {fmt(res[side][-1].value)}" for side in order))
            for side in st.pgs:
                runner.samples[key + SIDES[side][0]] = {"native": res["off"], "popgate": res[side]}
            commands[key] = {cmd: c / (per * a.rounds) for cmd, c in sorted(calls.items()) if c}
            log(f"  {key}: Redis commands per {'session' if per > 1 else 'listing'}: "
                + (", ".join(f"{cmd} {c:.2g}" for cmd, c in commands[key].items()) or "none"))
        keys = st.redis.keys("popgate:uidl:*")
        if not keys:
            raise RuntimeError("r: no UIDL memory in Redis after the listings "
                               "(is popgate using the Redis store?)")
        runner.r_result = {
            "messages": n,
            "uidl_keys": len(keys),
            "uidl_bytes": max(int(st.redis.cli("STRLEN", k)) for k in keys),
            "redis_keys": int(st.redis.cli("DBSIZE")),
            "commands": commands,
        }
        log(f"  r: {runner.r_result['redis_keys']} keys in Redis, the UIDL memory of the "
            f"big mailbox {runner.r_result['uidl_bytes'] / n:.1f} B/msg")
    finally:
        st.cleanup()


def med(samples: list[Sample]) -> float:
    return statistics.median(s.value for s in samples)


def rows(runner, targets: dict) -> list[Row]:
    """The table's rows for r: the Redis store against no store (with the
    targets), then the embedded store against no store (reference)."""
    S, a = runner.samples, runner.args
    k = a.listing_msgs // 1000
    out: list[Row] = []
    for side, (suffix, label) in SIDES.items():
        ref = side != "redis"
        specs = [
            ("r-d", f"sequential sessions, {label} vs none", "sessions/s", "rate",
             targets["r-d"], f">= {targets['r-d']:.1f}x", f"d, {side}"),
            ("r-e", f"{a.clients} concurrent clients, {label} vs none", "sessions/s", "rate",
             targets["r-e"], f">= {targets['r-e']:.1f}x", f"e, {side}"),
            ("r-f", f"UIDL+LIST {k}k warm, {label} vs none", "s", "time",
             targets["r-f"], f">= {targets['r-f']:.2f}x (time <= {1 / targets['r-f']:.1f}x)",
             f"list, {side}"),
        ]
        for key, title, unit, kind, target, ttext, plot_label in specs:
            if key + suffix not in S:
                continue
            res = S[key + suffix]
            out.append(Row(key + suffix, title, unit, med(res["native"]), med(res["popgate"]),
                           kind, None if ref else target, "reference" if ref else ttext,
                           note="reference: popgate without state", label=plot_label))
        if "r-e" + suffix in S:
            peak = max(s.extra["hwm_kib"] for s in S["r-e" + suffix]["popgate"]) / 1024
            out.append(Row("r-e-mem" + suffix, f"peak RSS during r-e, {label}", "MiB", None, peak,
                           "mem", targets["e-mem"] / 1024, "< 32 MiB", label=f"peak, {side}"))
    r = getattr(runner, "r_result", None)
    if r:
        out.append(Row("r-bytes", f"UIDL memory in Redis, {k}k msgs", "B/msg", None,
                       r["uidl_bytes"] / r["messages"], "mem", None, "reported",
                       label="Redis B/msg"))
    return out
