"""The upstream connection pool (`upstream.pool`): connections opened,
secured and greeted ahead of logins. A login takes one and a replacement
is opened behind it; connections the server closed meanwhile are not
handed out; an idle pool empties as its connections age."""

from __future__ import annotations

import os
import re
import signal
import subprocess

from corpus import simple_message
from dovecot import Dovecot
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate


def _gauge(pg: Popgate, name: str) -> int:
    m = re.search(rf'^{name}{{route="default"}} (\d+)', pg.http("/metrics")[1], re.M)
    assert m, name
    return int(m.group(1))


def _login(pg: Popgate, user: str, password: str) -> bytes:
    with Pop3Raw(pg.port) as c:
        answer = c.login(user, password)
        if answer.startswith(b"+OK"):
            assert c.answer("STAT").startswith(b"+OK 1 ")
            c.answer("QUIT")
        return answer


def test_logins_draw_from_the_pool_and_survive_a_server_restart():
    with Dovecot(users={"ann": "pw-a", "bob": "pw-b"}) as dv:
        for u in ("ann", "bob"):
            dv.deliver(u, simple_message(1))
        with Popgate(dv.imap_port, metrics=True,
                     upstream_extra="  pool: 3\n  pool_max_age: 3s\n") as pg:
            assert _gauge(pg, "popgate_upstream_connections_pooled") == 0, "empty until a login"
            assert _login(pg, "ann", "pw-a").startswith(b"+OK")
            wait_for(lambda: _gauge(pg, "popgate_upstream_connections_pooled") == 3, 20,
                     "the pool to fill after the first login")
            # The next login takes a pooled connection: its session needs no
            # new connection, and the pool is topped up again.
            connects = 'popgate_upstream_connections_total{route="default"}'
            before = pg.http("/metrics")[1]
            assert _login(pg, "bob", "pw-b").startswith(b"+OK")
            wait_for(lambda: _gauge(pg, "popgate_upstream_connections_pooled") == 3, 20,
                     "the pool to be topped up")
            # Every connection, pooled or not, served one login: Dovecot
            # logged each login once, and two users never shared one.
            logins = re.findall(r"imap-login: (?:Info: )?Login: user=<(\w+)>.*?session=<([^>]+)>", dv.log_text())
            sessions = [s for _, s in logins]
            assert len(sessions) == len(set(sessions)) == 2, logins
            assert connects in before

            # The server drops its waiting clients (its login processes
            # die; Dovecot starts new ones): the pooled connections are
            # closed under popgate, and the next login is served all the same.
            name = os.path.basename(dv.dir)
            pids = subprocess.run(["pgrep", "-f", f"{name}/imap-login"], capture_output=True,
                                  text=True).stdout.split()
            assert pids, "Dovecot's imap-login processes"
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
            assert _login(pg, "ann", "pw-a").startswith(b"+OK")

            # Idle, the pool empties as its connections age.
            wait_for(lambda: _gauge(pg, "popgate_upstream_connections_pooled") == 0, 30,
                     "the idle pool to empty")
            # (The health check opens one every few seconds, briefly.)
            wait_for(lambda: _gauge(pg, "popgate_upstream_connections_open") == 0, 30,
                     "no connection left open")


def test_no_pool_opens_nothing_ahead():
    with Dovecot(users={"ann": "pw-a"}) as dv:
        dv.deliver("ann", simple_message(1))
        with Popgate(dv.imap_port, metrics=True, upstream_extra="  pool: 0\n") as pg:
            assert _login(pg, "ann", "pw-a").startswith(b"+OK")
            assert _gauge(pg, "popgate_upstream_connections_pooled") == 0
