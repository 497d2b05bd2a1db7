"""bench/RESULTS.md and the figures behind it: where the time goes, what a
missed target's measurements say, and every round's value."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import report
from report import Row, fmt


def units(args) -> dict[str, tuple[int, str]]:
    """How many commands (or sessions, or listings) one measurement of each
    speed workload holds, and what to call one."""
    u = {"a": (args.retr_msgs, "RETR"), "b": (args.retr_msgs, "RETR"),
         "c": (args.top_msgs, "TOP"), "d": (args.seq_sessions, "session"),
         "e": (args.conc_sessions, "session"), "g": (1, "RETR"),
         "f-cold": (1, "listing"), "f-warm": (1, "listing"), "u-warm": (1, "listing"),
         "h": (args.seq_sessions, "session"), "j": (args.conc_sessions, "session"),
         "j-plain": (args.conc_sessions, "session"), "k": (args.retr_msgs, "RETR")}
    for suffix in ("", "-emb"):
        u["r-d" + suffix] = u["d"]
        u["r-e" + suffix] = u["e"]
        u["r-f" + suffix] = u["f-warm"]
    return u


def per_unit(res: dict, count: int) -> tuple[float, float, str]:
    """Median wall time per unit, native and popgate, scaled to ms or µs."""
    wn = statistics.median(s.wall for s in res["native"]) / count
    wp = statistics.median(s.wall for s in res["popgate"]) / count
    scale, unit = (1e3, "ms") if max(wn, wp) >= 1e-3 else (1e6, "µs")
    return wn * scale, wp * scale, unit


def diff(v: float) -> str:
    return ("+" if v >= 0 else "") + fmt(v)


def cpu_share(samples) -> float | None:
    """popgate's median CPU time over wall time, where it was measured."""
    cpus = [s.server_cpu / s.wall for s in samples if s.server_cpu is not None]
    return statistics.median(cpus) if cpus else None


def busy(samples) -> float:
    """The median share of the machine's cores in use."""
    return statistics.median(s.busy for s in samples)


def diagnostics(runner) -> list[str]:
    """Per-command times, popgate's CPU and the client's CPU share:
    where popgate spends the difference."""
    S, per = runner.samples, units(runner.args)
    out = []
    out.append("| Workload | wall per measurement, native / popgate | per command or session, native / popgate (difference) | popgate CPU / its wall | client CPU / wall (max) | machine busy, native / popgate | octets received, native / popgate |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for key in ("a", "b", "c", "d", "e", "f-cold", "f-warm", "g", "h", "j", "j-plain", "k",
                "r-d", "r-e", "r-f", "r-d-emb", "r-e-emb", "r-f-emb"):
        if key not in S:
            continue
        nat, pgs = S[key]["native"], S[key]["popgate"]
        wn = statistics.median(s.wall for s in nat)
        wp = statistics.median(s.wall for s in pgs)
        count, what = per[key]
        un, up, u = per_unit(S[key], count)
        cmd = f"{fmt(un)} / {fmt(up)} {u} per {what} ({diff(up - un)} {u})"
        share = cpu_share(pgs)
        pgcpu = "—" if share is None else f"{share * 100:.0f}%"
        ccpu = max(s.client_cpu / s.wall for s in nat + pgs + S[key].get("nginx", [])) * 100
        on = {s.octets for s in nat}
        op = {s.octets for s in pgs}
        octs = "—" if on == {0} else (f"{min(on):,} / {min(op):,}"
                                      + ("" if on == op else " (differ!)"))
        out.append(f"| {key} | {wn:.3g} s / {wp:.3g} s | {cmd} | {pgcpu} | {ccpu:.0f}% "
                   f"| {busy(nat) * 100:.0f}% / {busy(pgs) * 100:.0f}% | {octs} |")
    return out


def evidence(runner, key: str) -> str:
    """What the measurements say about a missed speed target: the time
    popgate adds per command, whether anyone was CPU-bound, and how much of
    the machine's extra CPU per command is popgate's own."""
    S, per = runner.samples, units(runner.args)
    if key not in S or key not in per:
        return ""
    count, what = per[key]
    nat, pgs = S[key]["native"], S[key]["popgate"]
    wn, wp, unit = per_unit(S[key], count)
    pgcpu, pgbusy = cpu_share(pgs) or 0.0, busy(pgs)
    if key.startswith("r-"):
        # The reference of r is popgate without state, not native Dovecot.
        offcpu = cpu_share(nat) or 0.0
        rcpu = statistics.median(s.extra["redis_cpu"] / s.wall for s in pgs)
        return (f"popgate on the Redis store takes {fmt(wp)} {unit} per {what} where "
                f"popgate without state takes {fmt(wn)} {unit} ({diff(wp - wn)} {unit}); "
                f"popgate used {pgcpu * 100:.0f}% of a core on the store "
                f"({offcpu * 100:.0f}% without), redis-server {rcpu * 100:.0f}%, and the "
                f"machine's {os.cpu_count()} cores were {pgbusy * 100:.0f}% busy (all processes).")
    ccpu = max(s.client_cpu / s.wall for s in nat + pgs)
    text = (f"popgate takes {fmt(wp)} {unit} per {what} where native takes "
            f"{fmt(wn)} {unit} ({diff(wp - wn)} {unit}); during popgate's "
            f"rounds popgate used {pgcpu * 100:.0f}% of a core, the client at most "
            f"{ccpu * 100:.0f}%, and the machine's {os.cpu_count()} cores were {pgbusy * 100:.0f}% "
            f"busy (all processes, the benchmark's and any others)")
    # CPU per unit on each side, every process counted, against popgate's
    # own: when popgate's own is most of the difference, the gap is its work.
    cores = os.cpu_count() or 1
    mn, mp, own = busy(nat) * cores * wn, pgbusy * cores * wp, pgcpu * wp
    text += (f"; all processes together spent {fmt(mn)} {unit} of CPU per {what} for native, "
             f"{fmt(mp)} {unit} for popgate, of which popgate's own {fmt(own)} {unit}")
    if mp > mn and own >= 0.5 * (mp - mn):
        covered = "all" if own >= mp - mn else f"{own / (mp - mn) * 100:.0f}%"
        text += (f": popgate's own work is {covered} of the difference, done on the cores "
                 "Dovecot needs" + (", which were saturated." if pgbusy >= 0.9 else "."))
    elif pgbusy >= 0.9:
        text += (": the cores were saturated, so the work popgate adds (its own and the "
                 "kernel's for the extra loopback hop) competes with Dovecot for them, and "
                 "every hop also waits for a core.")
    elif pgcpu < 0.5 and ccpu < 0.7:
        text += (": no process was CPU-bound and cores were idle, so the added time is "
                 "spent waiting on round trips (client, popgate, upstream and back) that "
                 "are not overlapped.")
    else:
        text += "."
    return text


def per_round(runner) -> list[str]:
    out = ["| Workload | native, round by round | popgate, round by round |", "|---|---|---|"]
    for key, res in runner.samples.items():
        out.append(f"| {key} | " + ", ".join(fmt(s.value) for s in res["native"])
                   + " | " + ", ".join(fmt(s.value) for s in res["popgate"]) + " |")
        if "nginx" in res:
            out.append(f"| {key}: nginx, round by round (its CPU / wall) | — | "
                       + ", ".join(f"{fmt(s.value)} "
                                   f"({s.extra.get('nginx_cpu', 0) / s.wall * 100:.0f}%)"
                                   for s in res["nginx"]) + " |")
    if "e" in runner.samples:
        out.append("| e: popgate VmHWM (KiB) | — | "
                   + ", ".join(str(s.extra["hwm_kib"]) for s in runner.samples["e"]["popgate"]) + " |")
    if "g" in runner.samples:
        out.append("| g: popgate VmRSS before -> VmHWM (KiB) | — | "
                   + ", ".join(f"{s.extra['rss_before_kib']} -> {s.extra['hwm_kib']}"
                               for s in runner.samples["g"]["popgate"]) + " |")
    for key in ("r-d", "r-e", "r-f"):
        if key in runner.samples:
            out.append(f"| {key}: redis-server CPU / wall | — | "
                       + ", ".join(f"{s.extra['redis_cpu'] / s.wall * 100:.0f}%"
                                   for s in runner.samples[key]["popgate"]) + " |")
    for key, calls in runner.r_result.get("commands", {}).items():
        out.append(f"| {key}: Redis commands per {'listing' if key == 'r-f' else 'session'} | — | "
                   + (", ".join(f"{cmd} {c:.2g}" for cmd, c in calls.items()) or "none") + " |")
    x = runner.x_result
    if x:
        step = max(1, len(x["series"]) // 20)
        out.append("| x: popgate VmRSS (KiB) over time (s) | — | "
                   + ", ".join(f"{t:.0f} s: {kib}" for t, kib in x["series"][::step]) + " |")
        out.append(f"| x: VmRSS before -> {x['idle']:,} idle -> {x['sessions']:,} sessions (KiB) "
                   f"| — | {x['rss_before_kib']} -> {x['rss_idle_kib']} -> "
                   f"{x['rss_sessions_kib']} |")
        if x["first_lost"] or x["dl_first_error"]:
            out.append(f"| x: first loss | — | {x['first_lost'] or x['dl_first_error']} |")
    for label, r in runner.i_result.items():
        out.append(f"| i ({label} mailbox): popgate VmRSS before -> after (KiB) | — | "
                   f"{r['rss_before_kib']} -> {r['rss_after_kib']} over {r['sessions']} sessions |")
    return out


def client_bound_warnings(runner) -> list[str]:
    out = []
    for key, res in runner.samples.items():
        share = max(s.client_cpu / s.wall for s in res["native"] + res["popgate"]
                    + res.get("nginx", []))
        if share > 0.7:
            out.append(f"{key}: the client used {share * 100:.0f}% of a core: it may limit the figure")
    return out


def write_results(args, runner, rows: list[Row], info: dict, command: str,
                  run_s: float, build_s: float, started: str, log) -> None:
    res_path, png_path = Path(args.results), Path(args.plot)
    title = (f"popgate vs Dovecot {info['dovecot'].split()[0]} POP3, {info['nproc']} cores, "
             f"{started}  ({command})")
    report.plot(rows, png_path, title)
    missed = [r for r in rows if r.met is False]
    lines = [
        "# popgate benchmark results",
        "",
        f"Written by `bench/run.py` on {started}; every run rewrites this file and "
        f"`{png_path.name}`. Method: [README.md](README.md).",
        "",
        "## Command",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Run time: {run_s:.0f} s" + (f" (plus {build_s:.0f} s building popgate)" if build_s else "")
        + f". Rounds per workload: {args.rounds}, interleaved native, popgate, native, popgate ...;"
        " figures are medians (memory: the worst round).",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['nproc']} cores (nproc)",
        f"- memory: {info['memory']}",
        f"- kernel: {info['kernel']} ({info['os']})",
        f"- Dovecot: {info['dovecot']}",
        f"- popgate: commit {info['popgate_commit']}, binary `{info['popgate_binary']}`, "
        f"log level {args.popgate_log_level}",
        f"- client: Python {info['python']} (bench/pop3client.py); {info['rustc']}",
        f"- load average at start: {info['loadavg_start']} (the machine may be shared: "
        "compare ratios within this run only)",
        "",
        "## Results",
        "",
        report.CONVENTION,
        "",
        report.md_table(rows),
        "",
        f"![ratios per workload]({png_path.name})",
        "",
        "## Targets missed",
        "",
    ]
    if missed:
        for r in missed:
            why = evidence(runner, r.key)
            lines.append(f"- **{r.key}** ({r.title}): {r.shortfall()}." + (f" {why}" if why else ""))
        lines += ["", "The per-command times and CPU figures below show where the time goes; "
                  "README.md says how to profile popgate during one workload, and "
                  "`bench/session_cpu.py` splits e's or j's CPU per session by process."]
    else:
        lines.append("None: every target was met in this run.")
    lines += ["", "## Where the time goes", "",
              "Per-command figures are the measurement's wall time divided by its "
              "commands (sessions for the session workloads, one listing for f and "
              "r-f; the reference of r is popgate without state); popgate CPU is "
              "popgate's user+system time during its measurements over their wall time (100% = one core); "
              "client CPU is the benchmark client's own share.", ""]
    lines += diagnostics(runner)
    warns = client_bound_warnings(runner)
    lines += ["", ("Client check: " + "; ".join(warns)) if warns else
              "Client check: the client never used more than 70% of a core, so it did not "
              "limit the figures.", ""]
    lines += ["## Round by round", ""] + per_round(runner) + [""]
    lines += ["## Settings", "",
              f"- a, b: {args.retr_msgs} messages of {args.retr_size:,} octets (text part and "
              f"base64 attachment, LF line ends as stored in Maildir); one session per "
              f"measurement, RETR 1..{args.retr_msgs}, b with {args.depth} commands in flight",
              f"- c: {args.top_msgs} messages of about 1 KB, TOP n 0 for each, one at a time",
              f"- d: {args.seq_sessions} sessions per measurement, one after the other; mailbox of 10 messages",
              f"- e: {args.conc_sessions} sessions per measurement by {args.clients} concurrent clients "
              "(one thread, epoll); same mailbox",
              f"- f: {args.listing_msgs:,} messages of about 1 KB; time from connect to the end of "
              "the LIST answer (USER, PASS, UIDL, LIST)",
              f"- g: one message of {args.big_mb} MB after a small one",
              "- h, j, k: d, e and a over POP3S (a full TLS handshake per session), against "
              "Dovecot's POP3S port; popgate with a POP3S listener and IMAPS to Dovecot; "
              "j-plain: j through a popgate with a plaintext upstream, as nginx's",
              f"- n: a popgate with no limits or session section (the shipped defaults); "
              f"{args.conc_sessions} sessions by {args.clients} clients from one address, each "
              "its own user, then as one user; then 30 connections idle before login and a "
              "login beside them; refusals counted by their text",
              f"- i: {args.idle_sessions} idle sessions on a {args.idle_msgs}-message mailbox, "
              f"{args.idle_big_sessions} on a {args.idle_big_msgs:,}-message mailbox, a fresh popgate each",
              "- r: d, e and f's warm listing through popgate on a throwaway redis-server "
              f"(appendonly yes, appendfsync {args.redis_appendfsync}, its directory on "
              f"{tempfile.gettempdir()}) and on the embedded store, against the popgate of a-g "
              "(no state section, the \"native\" column); the sides rotate within each round"]
    lines += [f"- {s}" for s in runner.settings]
    lines += [f"- note: {n}" for n in runner.notes]
    lines.append("")
    res_path.write_text("\n".join(lines))
    log(f"wrote {res_path} and {png_path}")
