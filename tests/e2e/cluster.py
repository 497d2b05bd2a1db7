"""Several popgate instances sharing one Redis state store: a cluster.

``Cluster(dovecot, redis, n)`` starts ``n`` instances with one config (the
same Redis URL and key prefix, the same limits and session settings), each
on its own fixed loopback port with ``proxy_protocol: true`` and
``proxy_trusted: ["127.0.0.0/8"]``, so they sit behind a balancer
(``haproxy.HAProxy(cluster.ports)``).  A test talks to one instance
directly with ``node.connect(client)``, which sends the PROXY v2 header a
balancer would send for that client address.

``node.restart()`` starts an instance again on the same port (HAProxy's
configuration stays valid); its earlier logs are kept, and ``node.logs()``
returns all of them in order.  Every instance is stopped and its directory
removed when the cluster's ``with`` block ends (or at the latest at the end
of the run, like every ``Popgate``).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import time

from dovecot import free_port
from pop3raw import Pop3Raw, proxy_v2
from popgate import Popgate, PortInUse

# Key prefixes: every cluster of a run gets its own, so that clusters
# sharing a redis-server share nothing else.
_prefixes = itertools.count(1)

NO_PENALTY = "  auth_penalty_max: 0s\n  connections_per_ip: 0\n"


def _start(pg: Popgate) -> None:
    try:
        pg.start()
    except RuntimeError as e:
        if "in use" in str(e):
            raise PortInUse(str(e)) from e
        raise


class Node:
    """One popgate instance of a cluster, on a port that stays its own."""

    def __init__(self, dovecot, config: str, *, metrics: bool = True, limits: str = NO_PENALTY,
                 name: str = "pg") -> None:
        self.name = name
        self._config = config
        self._metrics = metrics
        self._limits = limits
        self._dovecot = dovecot
        self.pg: Popgate | None = None
        self._old_logs: list[str] = []
        self.port = 0
        for _ in range(5):
            self.port = free_port()
            try:
                self._new_popgate()
                break
            except PortInUse:
                continue
        else:
            raise RuntimeError("no free port for popgate after 5 tries")

    def _new_popgate(self) -> None:
        pg = Popgate(self._dovecot.imap_port, extra=self._config, limits=self._limits,
                     metrics=self._metrics, start=False)
        # The port is written here rather than given to Popgate, which
        # would then probe it with a bare connection: start() waits for
        # the "listening on" line alone.
        with open(pg.config_path) as f:
            cfg = f.read()
        listener = 'address: "127.0.0.1:0"\n'
        assert listener in cfg
        cfg = cfg.replace(listener, f'address: "127.0.0.1:{self.port}"\n    proxy_protocol: true\n'
                          '    proxy_trusted: ["127.0.0.0/8"]\n', 1)
        with open(pg.config_path, "w") as f:
            f.write(cfg)
        self.pg = pg
        try:
            _start(pg)
        except BaseException:
            pg.cleanup()
            self.pg = None
            raise

    @property
    def config_path(self) -> str:
        assert self.pg is not None
        return self.pg.config_path

    @property
    def pid(self) -> int:
        assert self.pg is not None and self.pg.proc is not None
        return self.pg.proc.pid

    def running(self) -> bool:
        return self.pg is not None and self.pg.proc is not None and self.pg.proc.poll() is None

    def log_text(self) -> str:
        """The log of the running (or last) process."""
        return self.pg.log_text() if self.pg else ""

    def logs(self) -> str:
        """The logs of every process this instance has been, in order."""
        return "".join(self._old_logs) + self.log_text()

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM and the drain; the exit status."""
        assert self.pg is not None
        return self.pg.stop(timeout)

    def kill(self) -> None:
        """SIGKILL."""
        assert self.pg is not None
        self.pg.kill()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.pg is not None
        self.pg.signal(sig)

    def restart(self, timeout: float = 30) -> "Node":
        """Starts the instance again, same config, same port (it must have
        stopped).  A port briefly held by some outgoing connection is
        waited for."""
        assert self.pg is not None and not self.running()
        self._old_logs.append(self.pg.log_text())
        open(self.pg.log_path, "w").close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                _start(self.pg)
                return self
            except PortInUse:
                if time.monotonic() > deadline:
                    raise
                open(self.pg.log_path, "w").close()
                time.sleep(0.2)

    def connect(self, client: str = "127.0.0.2", timeout: float = 30) -> Pop3Raw:
        """A POP3 connection straight to this instance, introduced by a
        PROXY v2 header for `client` as a balancer would: the greeting is
        read."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.sendall(proxy_v2(client, random.randint(20000, 60000), "127.0.0.1", self.port))
        c = Pop3Raw.__new__(Pop3Raw)
        c.sock, c.buf = s, b""
        c.greeting = c.line()
        return c

    def http(self, path: str) -> tuple[int, str]:
        assert self.pg is not None
        return self.pg.http(path)

    def metric(self, series: str) -> float | None:
        """The value of one series on /metrics (None when absent)."""
        _, text = self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
        return None

    def cleanup(self) -> None:
        if self.pg is not None:
            self.pg.cleanup()

    def __repr__(self) -> str:
        return f"<Node {self.name} port={self.port} running={self.running()}>"


def state_config(redis, *, key_prefix: str | None = None, lease: str | None = None,
                 timeout: str | None = None, on_unavailable: str | None = None) -> str:
    """popgate's `state` section for this redis-server."""
    prefix = key_prefix or f"pgtest{os.getpid()}-{next(_prefixes)}:"
    text = f'state:\n  redis:\n    url: "{redis.url}"\n    key_prefix: "{prefix}"\n'
    if lease:
        text += f"    lease: {lease}\n"
    if timeout:
        text += f"    timeout: {timeout}\n"
    if on_unavailable:
        text += f"  on_unavailable: {on_unavailable}\n"
    return text


class Cluster:
    """`n` instances with one config; see the module docstring.

    `extra` is appended to the config (sections other than `state`,
    `limits`, `listeners`, `upstream`, `log`, `metrics`); `drain` is the
    shutdown drain timeout."""

    def __init__(self, dovecot, redis, n: int = 3, *, limits: str = NO_PENALTY, extra: str = "",
                 lease: str | None = None, on_unavailable: str | None = None,
                 key_prefix: str | None = None, drain: str = "10s", metrics: bool = True) -> None:
        self.state = state_config(redis, key_prefix=key_prefix, lease=lease,
                                  on_unavailable=on_unavailable)
        self.config = self.state + extra + f"shutdown:\n  drain_timeout: {drain}\n"
        self.nodes: list[Node] = []
        try:
            for i in range(n):
                self.nodes.append(Node(dovecot, self.config, metrics=metrics, limits=limits,
                                       name=f"pg{i}"))
        except BaseException:
            self.cleanup()
            raise

    @property
    def ports(self) -> dict[str, int]:
        """Server name -> port, for HAProxy."""
        return {n.name: n.port for n in self.nodes}

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def cleanup(self) -> None:
        for n in self.nodes:
            try:
                n.cleanup()
            except Exception:
                pass

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
