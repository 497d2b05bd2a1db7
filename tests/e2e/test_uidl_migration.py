"""Migration from another POP3 server: an "old" Dovecot serves POP3 with
UIDLs popgate cannot derive (`%g`, the Maildir file name), the clients
download from it in keep mode, the mail is copied to the new Dovecot by
IMAP APPEND in another order (new UIDs and UIDVALIDITY, INTERNALDATE
kept), and popgate in front of the new server with `migration.pop3`
pointing at the old one gives the old UIDLs: nothing is downloaded twice,
new mail once, also after the old server is gone."""

from __future__ import annotations

import glob
import os
import poplib
import re
import shutil
import socket
import subprocess

import pytest

import certs
from clients import CLIENTS, download
from corpus import CLIENT_MESSAGES, simple_message
from dovecot import Dovecot, free_port, tls_conf
from popgate import Popgate, binary
from scriptpop3 import ScriptedPop3

HOST = "127.0.0.1"
MASTER_PASSWORD = "old master secret"


def _message_id(raw: bytes) -> bytes:
    m = re.search(rb"(?im)^Message-ID:\s*(\S+)", raw)
    assert m, raw[:200]
    return m.group(1)


def _late(i: int) -> bytes:
    return (f"From: Late <late@mig.test>\nTo: u@mig.test\nSubject: late {i}\n"
            f"Date: Wed, 02 Dec 2026 06:00:0{i} +0000\nMessage-ID: <late-{i}@mig.test>\n"
            f"\nnew mail {i}\n").encode()


@pytest.fixture
def old():
    """The old server: its own Dovecot, POP3 UIDLs from the file name."""
    with Dovecot(pop3_uidl_format="%g", master_password=MASTER_PASSWORD) as dv:
        yield dv


def _fill(old: Dovecot, user) -> int:
    old.add_user(user.name, user.password)
    messages = list(CLIENT_MESSAGES) + [simple_message(7), simple_message(7)]
    for m in messages:
        old.deliver(user.name, m)
    return len(messages)


def copy_mailbox(old: Dovecot, new: Dovecot, name: str) -> None:
    """IMAP APPEND of every message, newest first, with its INTERNALDATE."""
    with old._session(name) as c:
        typ, data = c.uid("FETCH", "1:*", "(INTERNALDATE BODY.PEEK[])")
        assert typ == "OK", data
    messages = []
    for item in data:
        if isinstance(item, tuple):
            date = re.search(rb'INTERNALDATE ("[^"]+")', item[0]).group(1).decode()
            messages.append((date, item[1]))
    conn = new.imap(name)
    try:
        for date, body in reversed(messages):
            typ, resp = conn.append("INBOX", None, date, body)
            assert typ == "OK", resp
    finally:
        conn.logout()


def pop3_uidls(port: int, name: str, password: str) -> list[str]:
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        p.user(name)
        p.pass_(password)
        return [line.split(b" ", 1)[1].decode() for line in p.uidl()[1]]
    finally:
        p.quit()


def migration_config(state: str, old: Dovecot | None, tmp_path, *, login: str = "user",
                     on_failure: str = "refuse", port: int | None = None) -> str:
    text = (f'state:\n  path: "{state}"\n'
            "migration:\n  pop3:\n"
            f'    address: "{HOST}:{port or old.pop3_port}"\n'
            f"    tls: none\n    login: {login}\n    on_failure: {on_failure}\n"
            "    timeout: 10s\n")
    if login == "master":
        secret = tmp_path / "old-master"
        secret.write_text(MASTER_PASSWORD + "\n")
        os.chmod(secret, 0o600)
        text += f'    master_user: master\n    master_password_file: "{secret}"\n'
    return text


def _same_port_for_getmail(workdir, old_port: int, new_port: int) -> None:
    """getmail names its state by port; an operator moves the name to
    popgate, so clients keep their settings: the same as moving the port."""
    for path in glob.glob(str(workdir / f"oldmail-{HOST}-{old_port}-*")):
        shutil.copy(path, path.replace(f"-{old_port}-", f"-{new_port}-"))


def _run(client, port, user, tmp_path):
    return download(client, HOST, port, user.name, user.password, keep=True,
                    workdir=tmp_path / "client", timeout=30)


def _migrated_clients_download_nothing(client, old, dovecot, user, tmp_path, config,
                                       master=False):
    n = _fill(old, user)
    first = _run(client, old.pop3_port, user, tmp_path)
    assert len(first) == n
    old_uidls = pop3_uidls(old.pop3_port, user.name, user.password)
    assert not any(re.fullmatch(r"[0-9a-f]{16}", u) for u in old_uidls), old_uidls

    copy_mailbox(old, dovecot, user.name)
    if master:
        # Only the master user can still log in to the old server.
        old.add_user(user.name, "not the password popgate is given")
    new_order = [_message_id(b) for _, b in sorted(user.bodies().items())]
    assert new_order[0] != _message_id(CLIENT_MESSAGES[0])

    with Popgate(dovecot.imap_port, extra=config) as pg:
        _same_port_for_getmail(tmp_path / "client", old.pop3_port, pg.port)
        assert _run(client, pg.port, user, tmp_path) == []
        line = [x for x in pg.log_text().splitlines() if "UIDLs migrated" in x]
        assert len(line) == 1, pg.log_text()
        assert f"matched={n}" in line[0] and "unmatched=0" in line[0], line[0]
        assert sorted(pop3_uidls(pg.port, user.name, user.password)) == sorted(old_uidls)

        for i in range(3):
            user.deliver(_late(i))
        late = _run(client, pg.port, user, tmp_path)
        assert sorted(_message_id(m) for m in late) == [f"<late-{i}@mig.test>".encode() for i in range(3)]
        assert _run(client, pg.port, user, tmp_path) == []

        old.stop()
        assert _run(client, pg.port, user, tmp_path) == []
        user.deliver(_late(5))
        assert [_message_id(m) for m in _run(client, pg.port, user, tmp_path)] == [b"<late-5@mig.test>"]
        assert pg.log_text().count("UIDLs migrated") == 1
        assert "migration from the old POP3 server failed" not in pg.log_text()
        return pg.log_text()


@pytest.mark.parametrize("client", CLIENTS)
def test_clients_download_nothing_again_after_migration(client, old, dovecot, user, tmp_path):
    config = migration_config(str(tmp_path / "state"), old, tmp_path)
    log = _migrated_clients_download_nothing(client, old, dovecot, user, tmp_path, config)
    assert user.password not in log


@pytest.mark.parametrize("client", CLIENTS)
def test_migration_as_the_master_user(client, old, dovecot, user, tmp_path):
    config = migration_config(str(tmp_path / "state"), old, tmp_path, login="master")
    log = _migrated_clients_download_nothing(client, old, dovecot, user, tmp_path, config,
                                             master=True)
    assert MASTER_PASSWORD not in log and user.password not in log


# ------------------------------------------------------------------ faults

def _garbage(line, conn):
    if line == "UIDL":
        conn.sendall(b"* OK this is not POP3\r\n")
        return True
    return False


def _drop_mid_uidl(line, conn):
    if line == "UIDL":
        conn.sendall(b"+OK\r\n1 old-1\r\n")
        conn.shutdown(socket.SHUT_RDWR)
        return True
    return False


def _duplicate_uidls(line, conn):
    if line == "UIDL":
        conn.sendall(b"+OK\r\n1 old-1\r\n2 old-2\r\n3 old-1\r\n.\r\n")
        return True
    return False


def _echoes_the_password(line, conn):
    if line.startswith("PASS "):
        conn.sendall(b"-ERR [AUTH] wrong password: " + line[5:].encode() + b"\r\n")
        return True
    return False


FAULTS = {
    "login refused, the password echoed": (_echoes_the_password, "PASS refused: \"[AUTH] wrong password: <password>\""),
    "garbage": (_garbage, "unexpected answer"),
    "drop mid-UIDL": (_drop_mid_uidl, "closed in the middle of an answer"),
    "duplicate UIDLs": (_duplicate_uidls, "listed for two messages"),
}

OLD = [(f"old-{i}", simple_message(300 + i)) for i in range(1, 4)]


def _template_uidls(dovecot, user) -> list[str]:
    v = dovecot.uid_validity(user.name)
    return [f"{uid:08x}{v:08x}" for uid in user.uids()]


@pytest.mark.parametrize("on_failure", ["refuse", "continue"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_old_server(fault, on_failure, dovecot, user, tmp_path):
    hook, reason = FAULTS[fault]
    for _, body in reversed(OLD):
        user.deliver(body)
    with ScriptedPop3(OLD, hook) as server:
        config = migration_config(str(tmp_path / "state"), None, tmp_path,
                                  on_failure=on_failure, port=server.port)
        with Popgate(dovecot.imap_port, extra=config, log_level="debug") as pg:
            p = poplib.POP3(HOST, pg.port, timeout=30)
            p.user(user.name)
            if on_failure == "refuse":
                with pytest.raises(poplib.error_proto) as e:
                    p.pass_(user.password)
                assert e.value.args[0].startswith(b"-ERR [SYS/TEMP]"), e.value
            else:
                p.pass_(user.password)
                assert [x.split(b" ", 1)[1].decode() for x in p.uidl()[1]] == _template_uidls(dovecot, user)
                p.quit()
            line = [x for x in pg.log_text().splitlines() if "migration from the old POP3 server failed" in x]
            assert len(line) == 1, pg.log_text()
            assert reason in line[0] and f"on_failure={on_failure}" in line[0] and user.name in line[0], line[0]

            # The old server mends.
            server.fault = None
            asked = len(server.commands)
            uidls = pop3_uidls(pg.port, user.name, user.password)
            if on_failure == "refuse":
                # Nothing was stored: this login migrates.
                assert sorted(uidls) == ["old-1", "old-2", "old-3"]
                assert pg.log_text().count("UIDLs migrated") == 1
            else:
                # The template UIDLs were stored: never asked again.
                assert uidls == _template_uidls(dovecot, user)
                assert len(server.commands) == asked
            assert user.password not in pg.log_text()


def test_kill_9_during_a_migration_leaves_no_half_written_record(old, dovecot, user, tmp_path):
    """popgate is killed at varying points of the migration of a mailbox
    of 3,000 messages; after each restart the next login migrates it (or
    finds it migrated) and gives the old UIDLs."""
    import random
    import threading
    import time

    old.add_user(user.name, user.password)
    messages = [simple_message(1000 + i) for i in range(3000)]
    old.deliver_many(user.name, messages)
    dovecot.deliver_many(user.name, reversed(messages))
    expected = sorted(pop3_uidls(old.pop3_port, user.name, user.password))
    config = migration_config(str(tmp_path / "state"), old, tmp_path)
    rnd = random.Random(5)
    with Popgate(dovecot.imap_port, extra=config) as pg:
        for _ in range(4):
            t = threading.Thread(target=lambda: _try(lambda: pop3_uidls(pg.port, user.name, user.password)))
            t.start()
            time.sleep(rnd.uniform(0, 0.5))
            pg.kill()
            t.join(60)
            open(pg.log_path, "w").close()
            pg.start()
        assert sorted(pop3_uidls(pg.port, user.name, user.password)) == expected


def _try(fn):
    try:
        fn()
    except Exception:  # the kill ends the session any way it likes
        pass


# ------------------------------------------------------------------ TLS

@pytest.fixture(scope="module")
def pki():
    p = certs.make_pki()
    yield p
    p.cleanup()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_the_old_server_over_tls(mode, pki, dovecot, user, tmp_path):
    pop3s = free_port()
    conf = tls_conf(pki.dovecot.chain, pki.dovecot.key, pop3s_port=pop3s)
    with Dovecot(pop3_uidl_format="%g", extra_conf=conf) as old:
        n = _fill(old, user)
        old_uidls = pop3_uidls(old.pop3_port, user.name, user.password)
        copy_mailbox(old, dovecot, user.name)
        port = pop3s if mode == "implicit" else old.pop3_port
        config = migration_config(str(tmp_path / "state"), old, tmp_path, port=port)
        config = config.replace("    tls: none\n", f"    tls: {mode}\n    ca_file: \"{pki.other_ca.cert}\"\n")
        with Popgate(dovecot.imap_port, extra=config) as pg:
            # A certificate from a CA it was not told to trust: refused.
            with pytest.raises(poplib.error_proto):
                pop3_uidls(pg.port, user.name, user.password)
            assert "migration from the old POP3 server failed" in pg.log_text()
        with Popgate(dovecot.imap_port, extra=config.replace(pki.other_ca.cert, pki.ca.cert)) as pg:
            assert sorted(pop3_uidls(pg.port, user.name, user.password)) == sorted(old_uidls)
            assert f"matched={n}" in pg.log_text()
        tls = [l for l in old.log_text().splitlines()
               if f"pop3-login: Info: Login: user=<{user.name}>," in l and ", TLS" in l]
        # popgate's (the test's own reading of the old server is plaintext).
        assert len(tls) == 1, old.log_text()[-2000:]
        assert "unknown ca" in old.log_text()


def test_concurrent_first_logins_migrate_once(old, dovecot, user, tmp_path):
    import concurrent.futures

    _fill(old, user)
    expected = sorted(pop3_uidls(old.pop3_port, user.name, user.password))
    copy_mailbox(old, dovecot, user.name)
    config = migration_config(str(tmp_path / "state"), old, tmp_path)
    with Popgate(dovecot.imap_port, extra=config) as pg:
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            seen = list(pool.map(lambda _: pop3_uidls(pg.port, user.name, user.password), range(5)))
        assert all(sorted(s) == expected for s in seen)
        assert all(s == seen[0] for s in seen)
        assert pg.log_text().count("UIDLs migrated") == 1
    logins = [l for l in old.log_text().splitlines() if f"pop3-login: Info: Login: user=<{user.name}>," in l]
    assert len(logins) == 2  # the test's own reading, and popgate's one migration


# ------------------------------------------------------------ bulk import

def _import(config_path: str, users_path) -> subprocess.CompletedProcess:
    return subprocess.run([binary(), "uidl", "import", "--config", config_path,
                           "--users", str(users_path), "--concurrency", "3"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.parametrize("login", ["user", "master"])
@pytest.mark.parametrize("client", CLIENTS)
def test_bulk_import_ahead_of_the_first_login(client, login, old, dovecot, user, tmp_path):
    n = _fill(old, user)
    first = _run(client, old.pop3_port, user, tmp_path)
    assert len(first) == n
    copy_mailbox(old, dovecot, user.name)
    config = migration_config(str(tmp_path / "state"), old, tmp_path, login=login)
    users = tmp_path / "users"
    if login == "master":
        secret = tmp_path / "new-master"
        secret.write_text(dovecot.master_password + "\n")
        os.chmod(secret, 0o600)
        config += f'auth:\n  master_user: {dovecot.master_user}\n  master_password_file: "{secret}"\n'
        users.write_text(f"# users to import\n{user.name}\nnobody-there\n")
    else:
        users.write_text(f"{user.name}\t{user.password}\nnobody-there\tx\n")

    pg = Popgate(dovecot.imap_port, extra=config, start=False)
    try:
        if login == "user":
            # A file of passwords that others may read is refused, unread.
            os.chmod(users, 0o644)
            exposed = _import(pg.config_path, users)
            assert exposed.returncode == 2, exposed
            assert f"chmod 600 {users}" in exposed.stderr, exposed.stderr
            assert user.password not in exposed.stdout + exposed.stderr
            os.chmod(users, 0o600)
        done = _import(pg.config_path, users)
        assert done.returncode == 1, done  # one user failed
        lines = dict(l.split("\t", 1) for l in done.stdout.splitlines() if "\t" in l)
        assert lines[user.name] == f"migrated\told={n} matched={n} unmatched=0", done.stdout
        assert lines["nobody-there"].startswith("failed\told POP3 server:"), done.stdout
        assert "1 migrated, 0 skipped, 1 failed of 2" in done.stdout
        assert user.password not in done.stdout + done.stderr
        assert MASTER_PASSWORD not in done.stdout + done.stderr

        again = _import(pg.config_path, users)
        assert f"{user.name}\tskipped" in again.stdout, again

        # The old server is gone before anyone logs in through popgate.
        old.stop()
        pg.start()
        _same_port_for_getmail(tmp_path / "client", old.pop3_port, pg.port)
        assert _run(client, pg.port, user, tmp_path) == []
        for i in range(3):
            user.deliver(_late(i))
        late = _run(client, pg.port, user, tmp_path)
        assert sorted(_message_id(m) for m in late) == [f"<late-{i}@mig.test>".encode() for i in range(3)]
        assert _run(client, pg.port, user, tmp_path) == []
        assert "migration from the old POP3 server failed" not in pg.log_text()
    finally:
        pg.cleanup()
