"""SIGHUP reads the config again: new sessions get the new settings while a
running download finishes on the config it started with; a file that does
not load, or that changes what needs a restart, keeps the running config."""

from __future__ import annotations

import re
import signal

from corpus import large_attachment, simple_message
from faultkit import Pop3Wire
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate

LIMITS = "  auth_penalty_max: 0s\n  connections_per_ip: 0\n  sessions_per_user: {n}\n"


def _reloads(pg, result: str) -> int:
    _, text = pg.http("/metrics")
    m = re.search(r'^popgate_reloads_total\{kind="config",result="%s"\} (\d+)' % result, text, re.M)
    return int(m.group(1)) if m else 0


def _hangup(pg, result: str) -> None:
    """SIGHUP, and wait until popgate has counted the reload's outcome."""
    before = _reloads(pg, result)
    pg.signal(signal.SIGHUP)
    wait_for(lambda: _reloads(pg, result) > before, 15, f"a config reload counted as {result}")


def _rewrite(pg, old: str, new: str) -> None:
    with open(pg.config_path) as f:
        text = f.read()
    assert old in text
    with open(pg.config_path, "w") as f:
        f.write(text.replace(old, new))


def test_new_limits_for_new_sessions_while_a_download_completes(dovecot, user):
    big = large_attachment(2_000_000)
    user.deliver(big, simple_message(1), simple_message(2))
    uids = user.uids()
    want = dovecot.bodies(user.name)[uids[0]]
    with Popgate(dovecot.imap_port, limits=LIMITS.format(n=5), metrics=True) as pg:
        running = Pop3Wire(pg.port)
        assert running.cmd(f"USER {user.name}").startswith(b"+OK")
        assert running.cmd(f"PASS {user.password}").startswith(b"+OK")
        assert running.cmd("RETR 1").startswith(b"+OK")
        head = running.line()  # the download has begun; most of it is still upstream
        _rewrite(pg, "sessions_per_user: 5", "sessions_per_user: 1")
        with open(pg.config_path, "a") as f:
            f.write("delete:\n  action: flag\n")
        _hangup(pg, "ok")
        assert "config reloaded" in pg.log_text()
        # The new limit: the running session is the user's one allowed.
        with Pop3Raw(pg.port) as c:
            assert c.login(user.name, user.password).startswith(b"-ERR [IN-USE]")
        # The running session reads on to the end, byte for byte, and its
        # DELE is applied as its own config says (expunge).
        body = head
        while True:
            line = running.line()
            if line == b".\r\n":
                break
            body += line[1:] if line.startswith(b"..") else line
        assert body == want
        assert running.cmd("DELE 2").startswith(b"+OK")
        assert running.cmd("QUIT") == b"+OK Logging out, messages deleted.\r\n"
        assert user.uids() == [uids[0], uids[2]]
        # A new session has the new config: DELE flags.
        with user.pop3(pg.port) as c:
            assert c.answer("DELE 1").startswith(b"+OK")
            assert c.answer("QUIT") == b"+OK Logging out, messages flagged.\r\n"
        assert user.uids() == [uids[0], uids[2]]
        assert "$POP3Deleted" in dovecot.flags(user.name)[uids[0]]


def test_an_invalid_file_keeps_the_running_config(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    extra = "session:\n  max_messages: 1\n"
    with Popgate(dovecot.imap_port, extra=extra, metrics=True) as pg:
        _rewrite(pg, "max_messages: 1", "max_messages: many")
        _hangup(pg, "error")
        log = pg.log_text()
        assert "config reload failed; keeping the running config" in log
        assert re.search(r"session\.max_messages.*line \d+", log), log[-2000:]
        with user.pop3(pg.port) as c:
            assert c.answer("STAT").startswith(b"+OK 1 ")
        # A valid file is taken at the next SIGHUP.
        _rewrite(pg, "max_messages: many", "max_messages: 2")
        _hangup(pg, "ok")
        with user.pop3(pg.port) as c:
            assert c.answer("STAT").startswith(b"+OK 2 ")


def test_a_listener_change_needs_a_restart(dovecot, user):
    user.deliver(simple_message(1))
    with Popgate(dovecot.imap_port, extra="session:\n  max_messages: 1\n", metrics=True) as pg:
        _rewrite(pg, '  - address: "127.0.0.1:0"', '  - address: "127.0.0.1:1"')
        _rewrite(pg, "max_messages: 1", "max_messages: 0")
        _hangup(pg, "error")
        assert "listeners changed, which needs a restart" in pg.log_text()
        with user.pop3(pg.port) as c:
            assert c.answer("STAT").startswith(b"+OK 1 ")
        assert pg.proc.poll() is None


def test_reload_applies_the_log_level_and_keeps_the_master_password_out(dovecot, user, tmp_path):
    secret = "reload-master-Xy7q"
    pw = tmp_path / "master-password"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    extra = f'auth:\n  master_user: master\n  master_password_file: "{pw}"\n'
    with Popgate(dovecot.imap_port, extra=extra, metrics=True) as pg:
        with user.pop3(pg.port) as c:
            assert c.answer("QUIT").startswith(b"+OK")
        assert " DEBUG " not in pg.log_text()
        _rewrite(pg, 'level: "info"', 'level: "debug"')
        _hangup(pg, "ok")
        with user.pop3(pg.port) as c:
            assert c.answer("STAT").startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"+OK")
        log = pg.log_text()
        assert " DEBUG " in log, "log.level applies from the reload on"
        assert secret not in log
