"""n: popgate with its shipped defaults, as an ISP would first run it.

Every other workload lifts popgate's limits to match the reference
Dovecot's. This one starts a popgate with no `limits` (nor `session`)
section, so every limit is the built-in default that `examples/popgate.yaml`
documents, and counts what those defaults refuse when many customers share
one address behind carrier-grade NAT (all clients here come from
127.0.0.1):

- n-users: e's shape (300 sessions, 50 at a time), each client logging in
  as its own user: every session must be served;
- n-one-user: e itself, one user in 50 concurrent sessions: the only
  refusals allowed are the two the limits document for one user, `[IN-USE]`
  beyond `sessions_per_user` (10) sessions and `[SYS/TEMP] Too many login
  attempts` beyond `auth_attempts_queued_per_user` (4) logins in flight;
- n-idle: 30 connections from the address left idle before login, then one
  more connection that logs in: it must be served.

Figures are counts, not rates: these are correctness checks under load,
timed only to report the rate for reference.
"""

from __future__ import annotations

from pop3client import Conn
from workloads import SessionEngine, Timer, start_popgate

# The refusals the shipped limits document for one user's many sessions.
DOCUMENTED = ("[IN-USE] Mailbox is in use by another POP3 session.",
              "[SYS/TEMP] Too many login attempts, try again later.")
IDLE = 30


def users(clients: int) -> list[str]:
    """The customers behind the one address: one user per client."""
    return [f"nat{i}" for i in range(clients)]


def _sessions(port: int, names: list[str], password: str, clients: int,
              total: int) -> tuple[dict[str, int], float]:
    scripts = [[b"USER %s\r\n" % n.encode(), b"PASS %s\r\n" % password.encode(),
                b"STAT\r\n", b"QUIT\r\n"] for n in names]
    refused: dict[str, int] = {}
    eng = SessionEngine(port, *scripts, refusals=refused)
    with Timer() as t:
        eng.run(total, clients)
    return refused, total / t.wall


def _idle_then_login(port: int, user: str, password: str) -> bool:
    idle = [Conn(port, bufsize=4096) for _ in range(IDLE)]   # each read its greeting
    try:
        with Conn(port) as c:
            c.login(user, password)
            c.quit()
        return True
    except Exception:   # noqa: BLE001 - any failure is the finding
        return False
    finally:
        for c in idle:
            c.close()


def run(runner, log, dv, binary: str, single_user: str, password: str) -> None:
    a = runner.args
    pg = start_popgate(binary, dv.imap_port, log_level=a.popgate_log_level,
                       shipped_defaults=True)
    try:
        log(f"n: shipped defaults, {a.conc_sessions} sessions by {a.clients} clients "
            "from one address")
        many, rate_many = _sessions(pg.port, users(a.clients), password, a.clients,
                                    a.conc_sessions)
        one, rate_one = _sessions(pg.port, [single_user], password, a.clients,
                                  a.conc_sessions)
        served = _idle_then_login(pg.port, users(1)[0], password)
    finally:
        pg.cleanup()
    runner.n_result = {"many": many, "rate_many": rate_many, "one": one,
                       "rate_one": rate_one, "idle_login": served}
    log(f"  n: {a.clients} users: refused {sum(many.values())} {many or ''} "
        f"({rate_many:.0f} sessions/s); one user: refused {one or 'none'} "
        f"({rate_one:.0f} sessions/s); login behind {IDLE} idle connections: "
        + ("served" if served else "REFUSED"))


def rows(runner, Row) -> list:
    n = runner.n_result
    if not n:
        return []
    a = runner.args
    other = {k: v for k, v in n["one"].items() if k not in DOCUMENTED}

    def listing(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    return [
        Row("n-users", f"defaults: {a.clients} users, one address", "refused", None,
            sum(n["many"].values()), "mem", 1, "0",
            note=f"{listing(n['many'])}; {n['rate_many']:.0f} sessions/s", label="NAT users"),
        Row("n-one-user", f"defaults: one user, {a.clients} at once", "refused", None,
            sum(other.values()), "mem", 1, "0 undocumented",
            note=f"{listing(n['one'])}; {n['rate_one']:.0f} sessions/s", label="one user"),
        Row("n-idle", f"defaults: login behind {IDLE} idle connections", "refused", None,
            0 if n["idle_login"] else 1, "mem", 1, "0", label="idle + login"),
    ]
