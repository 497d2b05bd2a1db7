"""Several popgate instances sharing one Redis behave as one gateway: the
UIDL memory, exclusive sessions and the failed-login penalty are
cluster-wide; Redis going away and coming back is survived; instances
restarted one at a time behind HAProxy lose and repeat nothing.

Each test runs a real redis-server (append-only file), a real Dovecot,
several popgate processes and, where a balancer is in play, a real HAProxy
sending PROXY v2 headers.  Clients connect from 127.0.0.2 (or other
loopback addresses), HAProxy from 127.0.0.3 and popgate from 127.0.0.1, so
each log shows whose address it saw.
"""

from __future__ import annotations

import base64
import os
import poplib
import random
import re
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from clients import download
from cluster import Cluster, Node
from corpus import CLIENT_MESSAGES, simple_message
from haproxy import HAProxy
from polling import wait_for
from popgate import binary
from redisserver import RedisServer

CLIENT = "127.0.0.2"


@pytest.fixture(scope="module")
def redis():
    with RedisServer() as r:
        yield r


def _message_id(raw: bytes) -> bytes:
    m = re.search(rb"(?im)^Message-ID:\s*(\S+)", raw)
    assert m, raw[:200]
    return m.group(1)


def _logins(node: Node, name: str) -> list[str]:
    """popgate's "logged in" lines of user `name`, over all its restarts."""
    user = re.compile(rf"\buser={re.escape(name)}(\s|$)")
    return [line for line in node.logs().splitlines() if "logged in" in line and user.search(line)]


def _late(tag: str) -> bytes:
    return (f"From: Late <late@cluster.test>\nTo: u@cluster.test\nSubject: late {tag}\n"
            f"Date: Wed, 02 Dec 2026 05:00:00 +0000\nMessage-ID: <late-{tag}@cluster.test>\n"
            f"\nnew mail {tag}\n").encode()


def _balanced(dovecot, redis, n: int = 3, **kw) -> tuple[Cluster, HAProxy]:
    cluster = Cluster(dovecot, redis, n, **kw)
    try:
        lb = HAProxy(cluster.ports)
        for node in cluster:
            lb.wait_status(node.name, "UP")
    except BaseException:
        cluster.cleanup()
        raise
    return cluster, lb


# ---------------------------------------------------------------- 1. keep mode through HAProxy

@pytest.mark.parametrize("client", ["fetchmail", "mpop", "poplib"])
def test_keep_mode_through_haproxy_downloads_nothing_twice(client, dovecot, redis, user, tmp_path):
    """Runs of one client land on all three instances in turn; none of
    them downloads a message again, also after the mailbox's UIDVALIDITY
    changed between runs (the UIDL memory one instance wrote is what the
    next one reads); Dovecot sees the client's address, not HAProxy's or
    popgate's."""
    user.deliver(*CLIENT_MESSAGES)
    cluster, lb = _balanced(dovecot, redis)
    with cluster, lb:
        def run() -> list[bytes]:
            return download(client, "127.0.0.1", lb.port, user.name, user.password, keep=True,
                            workdir=tmp_path / "client", timeout=60, source=CLIENT)

        first = run()
        assert sorted(_message_id(m) for m in first) == sorted(_message_id(m) for m in CLIENT_MESSAGES)
        runs = 1
        for step in range(3):
            dovecot.bump_uid_validity(user.name)
            assert run() == [], f"downloaded again after UIDVALIDITY reset {step + 1}"
            user.deliver(_late(str(step)))
            late = run()
            assert [_message_id(m) for m in late] == [f"<late-{step}@cluster.test>".encode()]
            assert run() == []
            assert run() == []
            # Four runs per reset: round robin puts the next reset's first
            # run on the next instance.
            runs += 4

        per_node = {node.name: len(_logins(node, user.name)) for node in cluster}
        print(f"{client}: logins per instance {per_node}")
        assert sum(per_node.values()) == runs, per_node
        # Round robin over three healthy instances: each had runs.
        assert all(n > 0 for n in per_node.values()), per_node
        # Each reset was re-matched once, by whichever instance the next
        # run landed on, from the memory stored through other instances.
        named = re.compile(rf"(?<![\w.-]){re.escape(user.name)}(?![\w.-])")
        rematched = [n.name for n in cluster for line in n.logs().splitlines()
                     if "UIDLs re-matched" in line and named.search(line)]
        print(f"{client}: re-matched on {rematched}")
        assert len(rematched) == 3, rematched
        assert len(set(rematched)) > 1, rematched

        # The client's address all the way: popgate got it from the PROXY
        # header, Dovecot from popgate's IMAP ID.
        for node in cluster:
            for line in _logins(node, user.name):
                assert f"client={CLIENT}:" in line, line
        pattern = re.compile(rf"imap-login: (?:Info: )?Login: user=<{re.escape(user.name)}>.*?rip=([0-9.]+)")
        wait_for(lambda: len(pattern.findall(dovecot.log_text())) >= runs, 10,
                 "Dovecot to log every login")
        rips = pattern.findall(dovecot.log_text())
        # The test's own IMAP look-ups come from 127.0.0.1; no login shows
        # HAProxy's address, and one per run shows the client's.
        assert "127.0.0.3" not in rips, rips
        assert rips.count(CLIENT) >= runs, rips


# ---------------------------------------------------------------- 2. exclusive sessions

def _login(node: Node, user, client: str) -> tuple[bytes, object]:
    c = node.connect(client)
    return c.login(user.name, user.password), c


def test_an_exclusive_session_holds_the_user_on_every_instance(dovecot, redis, user):
    """With session.exclusive, a session on A keeps the user out of B
    (-ERR [IN-USE]), for longer than the lease as A renews it; after QUIT
    B lets the user in at once; after A is killed with SIGKILL (no QUIT, no
    release) B lets the user in once the lease has run out, without waiting
    for anything else."""
    user.deliver(simple_message(1))
    with Cluster(dovecot, redis, 2, lease="3s", extra="session:\n  exclusive: true\n") as cluster:
        a, b = cluster

        answer, holder = _login(a, user, "127.0.0.2")
        assert answer.startswith(b"+OK"), answer
        answer, other = _login(b, user, "127.0.0.4")
        assert answer.startswith(b"-ERR [IN-USE]"), answer
        other.close()
        answer, other = _login(a, user, "127.0.0.5")
        assert answer.startswith(b"-ERR [IN-USE]"), answer
        other.close()
        assert holder.answer("QUIT").startswith(b"+OK")
        holder.close()

        # Released by QUIT: B's first attempt gets in.
        answer, holder = _login(b, user, "127.0.0.4")
        assert answer.startswith(b"+OK"), answer
        assert holder.answer("QUIT").startswith(b"+OK")
        holder.close()

        answer, holder = _login(a, user, "127.0.0.2")
        assert answer.startswith(b"+OK"), answer
        answer, other = _login(b, user, "127.0.0.4")
        assert answer.startswith(b"-ERR [IN-USE]"), answer
        other.close()
        # A session longer than the lease renews it: still held after two.
        time.sleep(6.5)
        answer, other = _login(b, user, "127.0.0.4")
        assert answer.startswith(b"-ERR [IN-USE]"), answer
        other.close()

        a.kill()
        killed = time.monotonic()
        answers = []

        def in_again():
            answer, c = _login(b, user, "127.0.0.4")
            answers.append(answer)
            if answer.startswith(b"+OK"):
                return c
            c.close()
            assert answer.startswith(b"-ERR [IN-USE]"), answer
            return None

        c = wait_for(in_again, 60, "the killed instance's lease to run out", interval=0.1)
        print(f"logged in on B {time.monotonic() - killed:.2f} s after SIGKILL of A "
              f"(lease 3 s, {len(answers)} attempts)")
        assert c.answer("QUIT").startswith(b"+OK")
        c.close()
        holder.close()


# ---------------------------------------------------------------- 3. the penalty

PENALTY = ("  auth_penalty_max: 8s\n  connections_per_ip: 0\n"
           "  auth_failures_per_connection: 1000\n")
STEPS_MS = [0, 1000, 2000, 4000, 8000]


def _level(wait_ms: int) -> int:
    """The penalty step a wait belongs to: 0 for none, k for a wait in
    (step k-1, step k]: the failures counted before it.  A wait is its
    step less the time from the failure to the next attempt, which here is
    a new connection right after the answer (milliseconds)."""
    for k, step in enumerate(STEPS_MS):
        if wait_ms <= step:
            return k
    return len(STEPS_MS)


_HELD = re.compile(r"login held back.*\bwait_ms=(\d+)")


def _guesses(nodes: list, user, client: str) -> list[int]:
    """A wrong password for `user` from `client` at each node in turn: the
    wait_ms each attempt was held back (0: not held)."""
    waits = []
    for node in nodes:
        before = len(node.log_text())
        with node.connect(client) as c:
            assert c.login(user.name, "wrong password").startswith(b"-ERR [AUTH]")
        new = [line for line in node.log_text()[before:].splitlines() if f"client={client}:" in line]
        held = [int(m.group(1)) for line in new if (m := _HELD.search(line))]
        assert len(held) <= 1, new
        waits.append(held[0] if held else 0)
    return waits


def test_failed_logins_are_penalised_across_instances_as_on_one(dovecot, redis, user):
    """Wrong passwords from one address sent to A, B, C, A are held back
    1 s, 2 s, 4 s as the same four sent to one popgate are: every instance
    knows the failures the others saw.  Another user from another address
    meanwhile logs in without waiting."""
    other = f"{user.name}x"
    dovecot.add_user(other, "other secret")
    lone_user = f"{user.name}y"
    dovecot.add_user(lone_user, "lone secret")

    # One instance without Redis: its own memory of failures.
    single = Node(dovecot, "", limits=PENALTY, metrics=False, name="single")
    try:
        alone = _guesses([single] * 4, SimpleNamespace(name=lone_user), "127.0.5.1")
    finally:
        single.cleanup()
    print(f"one instance: waits {alone} ms")

    with Cluster(dovecot, redis, 3, limits=PENALTY) as cluster:
        a, b, c = cluster
        spread = _guesses([a, b, c, a], user, "127.0.5.2")
        print(f"three instances: waits {spread} ms")
        assert [_level(w) for w in alone] == [0, 1, 2, 3], (
            f"one instance did not hold back 1, 2, 4 s: {alone}")
        assert [_level(w) for w in spread] == [_level(w) for w in alone], (
            f"three instances {spread} ms, one instance {alone} ms")

        # The penalty is on that address and that user only.
        before = len(b.log_text())
        with b.connect("127.0.5.3") as conn:
            assert conn.login(other, "other secret").startswith(b"+OK")
            assert conn.answer("QUIT").startswith(b"+OK")
        new = b.log_text()[before:]
        assert "logged in" in new
        assert "login held back" not in new, new


# ---------------------------------------------------------------- 4. Redis going away

STORE_UP = 'popgate_state_store_up{backend="redis"}'


def _uidls(node: Node, user, client: str = CLIENT) -> list[bytes]:
    with node.connect(client) as c:
        assert c.login(user.name, user.password).startswith(b"+OK")
        listing = c.answer("UIDL")
        assert c.answer("QUIT").startswith(b"+OK")
    lines = listing.split(b"\r\n")[1:-2]
    return [line.split(b" ", 1)[1] for line in lines]


def _sum_metric(node: Node, name: str, label: str) -> float:
    """The sum of the series of `name` that carry `label`."""
    total = 0.0
    for line in node.http("/metrics")[1].splitlines():
        if line.startswith(name + "{") and label in line.split("}")[0]:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_redis_going_away_and_coming_back(dovecot, user):
    """Redis stopped: refuse mode (the default) answers new logins -ERR [SYS/TEMP] and
    says so on /readyz and popgate_state_store_up; serve mode lets them in;
    sessions already logged in on either finish RETR, DELE and QUIT (the
    message is gone from Dovecot).  Redis started again (from its
    append-only file): logins work again without restarting popgate, and
    the UIDLs remembered before the outage survive a UIDVALIDITY reset."""
    second = f"{user.name}s"
    dovecot.add_user(second, "second secret")
    for i in range(4):
        user.deliver(simple_message(500 + i))
        dovecot.deliver(second, simple_message(600 + i))

    other = SimpleNamespace(name=second, password="second secret")
    prefix = f"pgfault{os.getpid()}:"
    with RedisServer() as redis, \
            Cluster(dovecot, redis, 1, key_prefix=prefix) as refuse_c, \
            Cluster(dovecot, redis, 1, key_prefix=prefix, on_unavailable="serve") as serve_c:
        refuse, serve = refuse_c[0], serve_c[0]
        for mode, node in (("refuse", refuse), ("serve", serve)):
            wait_for(lambda: node.metric(STORE_UP) == 1, 15, f"{mode}: state store up at start")
        assert refuse.http("/readyz")[0] == 200

        before = _uidls(refuse, user)
        assert len(before) == 4
        assert redis.keys(prefix + "uidl:*"), redis.keys()
        uid_of = dict(zip(before, user.uids()))

        held = []
        for mode, node, u in (("refuse", refuse, user), ("serve", serve, other)):
            c = node.connect(CLIENT)
            assert c.login(u.name, u.password).startswith(b"+OK")
            held.append((mode, u, c, dovecot.uids(u.name), _message_id(dovecot.bodies(u.name)[1])))

        redis.stop()
        for mode, node in (("refuse", refuse), ("serve", serve)):
            wait_for(lambda: node.metric(STORE_UP) == 0, 15, f"{mode}: state store down")
        status, body = refuse.http("/readyz")
        assert status == 503 and "state store unreachable" in body, (status, body)

        with refuse.connect(CLIENT) as c:
            answer = c.login(user.name, user.password)
            assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
        assert _sum_metric(refuse, "popgate_logins_total", 'result="store_unavailable"') >= 1
        with serve.connect(CLIENT) as c:
            answer = c.login(other.name, other.password)
            assert answer.startswith(b"+OK"), answer
            assert c.answer("QUIT").startswith(b"+OK")

        # Sessions logged in before the outage finish their work.
        for name, u, c, uids, first in held:
            retr = c.answer("RETR 1")
            assert retr.startswith(b"+OK"), (name, retr)
            assert _message_id(retr) == first, name
            assert c.answer("DELE 1").startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"+OK"), name
            c.close()
            assert dovecot.uids(u.name) == uids[1:], name

        redis.start()
        # The append-only file brought the memory back before any login.
        assert redis.keys(prefix + "uidl:*")
        started = time.monotonic()

        def back():
            with refuse.connect(CLIENT) as c:
                answer = c.login(user.name, user.password)
                if answer.startswith(b"+OK"):
                    c.answer("QUIT")
                    return True
                assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
                return False

        wait_for(back, 30, "a login through the refusing instance after Redis came back",
                 interval=0.2)
        print(f"refuse mode: logins again {time.monotonic() - started:.2f} s after Redis started")
        for mode, node in (("refuse", refuse), ("serve", serve)):
            wait_for(lambda: node.metric(STORE_UP) == 1, 15, f"{mode}: state store up")
        assert refuse.http("/readyz")[0] == 200

        # The memory written before the restart still names the messages.
        dovecot.bump_uid_validity(user.name)
        remaining = [u for u in before if uid_of[u] in dovecot.uids(user.name)]
        assert len(remaining) == 3
        assert _uidls(serve, user) == remaining
        assert _uidls(refuse, user) == remaining


# ---------------------------------------------------------------- 5. rolling restart under load

CLIENTS_N = int(os.environ.get("POPGATE_E2E_ROLLING_CLIENTS", "50"))
PASSES = int(os.environ.get("POPGATE_E2E_ROLLING_PASSES", "1"))


class _Mailbox:
    """One poplib client in keep mode with its own user, and what it saw."""

    def __init__(self, dovecot, i: int, deletes: bool) -> None:
        self.dovecot = dovecot
        self.name = f"roll{os.getpid()}x{i}x{random.randrange(10**6)}"
        self.password = f"pw {i}"
        self.deletes = deletes
        self.source = f"127.0.4.{i + 1}"
        self.delivered: list[bytes] = []  # Message-IDs
        self.seen: set[bytes] = set()  # UIDLs of committed sessions
        self.uidl_msgid: dict[bytes, bytes] = {}
        self.committed_retr: dict[bytes, int] = {}  # UIDL -> times downloaded in completed sessions
        self.committed_msgid: dict[bytes, int] = {}  # Message-ID -> the same
        self.deleted: set[bytes] = set()  # Message-IDs, QUIT answered +OK
        self.maybe_deleted: set[bytes] = set()  # DELE and QUIT sent, QUIT unanswered
        self.sessions = 0
        self.failures: list[str] = []
        self.last_ok = False
        self.n = 0

    def deliver(self) -> None:
        self.n += 1
        raw = (f"From: a@roll.test\nTo: {self.name}@roll.test\nSubject: {self.n}\n"
               f"Message-ID: <{self.name}-{self.n}@roll.test>\n\nround {self.n}\n").encode()
        self.dovecot.deliver(self.name, raw)
        self.delivered.append(_message_id(raw))

    def session(self, port: int) -> None:
        self.sessions += 1
        got: dict[bytes, bytes] = {}
        dele: bytes | None = None
        try:
            conn = _pop3_from(self.source, port)
            try:
                conn.user(self.name)
                conn.pass_(self.password)
                listing = conn.uidl()[1]
                nums = {}
                for line in listing:
                    num, uidl = line.split(b" ", 1)
                    nums[uidl] = int(num)
                for uidl, num in nums.items():
                    if uidl in self.seen:
                        continue
                    lines = conn.retr(num)[1]
                    msgid = _message_id(b"\r\n".join(lines))
                    known = self.uidl_msgid.setdefault(uidl, msgid)
                    assert known == msgid, f"{self.name}: UIDL {uidl!r} was {known!r}, now {msgid!r}"
                    got[uidl] = msgid
                if self.deletes:
                    old = [u for u in nums if u in self.seen]
                    if old:
                        dele = old[0]
                        conn.dele(nums[dele])
                # A session that ends before QUIT deletes nothing; from
                # here on the deletion may be done even if the answer to
                # QUIT is lost.
                if dele is not None:
                    self.maybe_deleted.add(self.uidl_msgid[dele])
                resp = conn.quit()
                assert resp.startswith(b"+OK"), resp
            finally:
                conn.close()
        except (OSError, EOFError, poplib.error_proto) as e:
            self.failures.append(f"{type(e).__name__}: {e}")
            self.last_ok = False
            return
        for uidl, msgid in got.items():
            self.committed_retr[uidl] = self.committed_retr.get(uidl, 0) + 1
            self.committed_msgid[msgid] = self.committed_msgid.get(msgid, 0) + 1
        self.seen |= set(got)
        if dele is not None:
            self.deleted.add(self.uidl_msgid[dele])
            self.maybe_deleted.discard(self.uidl_msgid[dele])
            self.seen.discard(dele)
        self.last_ok = True


def _pop3_from(source: str, port: int) -> poplib.POP3:
    class P(poplib.POP3):
        def _create_socket(self, timeout):
            return socket.create_connection((self.host, self.port), timeout,
                                            source_address=(source, 0))

    return P("127.0.0.1", port, timeout=60)


def test_rolling_restart_under_load_loses_and_repeats_nothing(dovecot, redis):
    """50 poplib clients in keep mode (every fifth also deleting one old
    message per session) download through HAProxy while the three
    instances are stopped with SIGTERM and started again one at a time.
    Afterwards every client has downloaded every message delivered to it
    exactly once in its completed sessions (a failed session is simply
    run again), every message it did not delete (a DELE in a session that
    ended before QUIT deletes nothing) is still in Dovecot with no
    \\Deleted flag, and every deletion it saw confirmed is done."""
    boxes = [_Mailbox(dovecot, i, deletes=(i % 5 == 0)) for i in range(CLIENTS_N)]
    dovecot.add_users({b.name: b.password for b in boxes})
    for b in boxes:
        for _ in range(3):
            b.deliver()

    cluster, lb = _balanced(dovecot, redis, 3, drain="20s")
    with cluster, lb:
        stop = threading.Event()
        errors: list[BaseException] = []

        def client(box: _Mailbox) -> None:
            try:
                rnd = random.Random(box.name)
                while not stop.is_set():
                    box.deliver()
                    box.session(lb.port)
                    time.sleep(rnd.uniform(0.05, 0.3))
                # Quiet now: one completed session takes what is left.
                for _ in range(5):
                    box.session(lb.port)
                    if box.last_ok:
                        break
            except BaseException as e:  # an assertion inside a session
                errors.append(e)

        threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in boxes]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: sum(b.sessions for b in boxes) >= 2 * CLIENTS_N, 60, "the load to start")
            for _ in range(PASSES):
                for node in cluster:
                    assert node.stop() == 0, node.log_text()[-2000:]
                    # HAProxy's health check takes it out of the rotation;
                    # until then a connection it refuses goes elsewhere.
                    lb.wait_status(node.name, "DOWN")
                    node.restart()
                    lb.wait_status(node.name, "UP")
                    # The restarted instance takes its share of the load.
                    wait_for(lambda: "logged in" in node.log_text(), 30,
                             f"{node.name} to serve again after its restart")
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        assert not errors, errors[:3]
        assert not any(t.is_alive() for t in threads)

        sessions = sum(b.sessions for b in boxes)
        failures = [f for b in boxes for f in b.failures]
        print(f"{sessions} sessions, {len(failures)} failed and run again: "
              f"{sorted(set(f.split(':')[0] for f in failures))}")
        for node in cluster:
            drained = re.findall(r"draining.*open_sessions=(\d+)", node.logs())
            print(f"{node.name}: {node.logs().count('logged in')} logins, "
                  f"{node.logs().count('listening on')} starts, sessions open at SIGTERM {drained}")
            assert node.logs().count("listening on") == PASSES + 1

        for b in boxes:
            assert b.last_ok, f"{b.name}: the last session failed: {b.failures[-3:]}"
            twice = {u: n for u, n in b.committed_retr.items() if n > 1}
            assert not twice, f"{b.name}: downloaded again: {twice}"
            twice = {m: n for m, n in b.committed_msgid.items() if n > 1}
            assert not twice, f"{b.name}: downloaded again under another UIDL: {twice}"
            downloaded = set(b.uidl_msgid[u] for u in b.committed_retr)
            assert downloaded == set(b.delivered), (
                f"{b.name}: delivered but not downloaded {set(b.delivered) - downloaded}")
            bodies = dovecot.bodies(b.name)
            flags = dovecot.flags(b.name)
            present = {_message_id(raw): uid for uid, raw in bodies.items()}
            for msgid in b.delivered:
                if msgid in b.deleted:
                    assert msgid not in present, f"{b.name}: {msgid!r} deleted but still there"
                elif msgid not in b.maybe_deleted:
                    assert msgid in present, f"{b.name}: {msgid!r} lost"
                    assert "\\Deleted" not in flags[present[msgid]], f"{b.name}: {msgid!r} marked deleted"
            assert len(bodies) == len(present)


# ---------------------------------------------------------------- the Redis password stays secret

def test_the_redis_password_reaches_no_log_or_error(dovecot, user, tmp_path):
    """popgate logs in to a Redis that requires a password from its
    password file; with a wrong one every login is refused as the store
    being unavailable. Neither password, in any form, is in popgate's log,
    in `--check`'s output or in the metrics."""
    good, bad = "Redis-Pass-7Hq2", "Wrong-Redis-Pass-9Zk4"
    with RedisServer(password=good) as r:
        logs, outputs = [], []
        for password, works in ((good, True), (bad, False)):
            pwfile = tmp_path / f"redis-password-{works}"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            state = (f'state:\n  redis:\n    url: "{r.url}"\n'
                     f'    password_file: "{pwfile}"\n')
            node = Node(dovecot, state)
            try:
                checked = subprocess.run([binary(), "--check", "--config", node.config_path],
                                         capture_output=True, text=True)
                outputs.append(checked.stdout + checked.stderr)
                p = node.connect()
                answer = p.login(user.name, user.password)
                p.close()
                if works:
                    assert answer.startswith(b"+OK"), answer
                    assert r.keys("popgate:uidl:*"), "the login wrote its memory"
                else:
                    assert answer.rstrip() == b"-ERR [SYS/TEMP] Mailbox state unavailable, try again later."
                    assert "state store unreachable" in node.log_text()
                outputs.append(node.http("/metrics")[1])
                logs.append(node.log_text())
            finally:
                node.cleanup()
    text = "\n".join(logs + outputs)
    for secret in (good, bad):
        for form in (secret, secret.lower(), base64.b64encode(secret.encode()).decode(),
                     secret.encode().hex(), repr(secret)[1:-1]):
            assert form not in text, f"{form!r} is in popgate's output"
