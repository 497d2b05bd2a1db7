"""APOP and CRAM-MD5 through a credentials file: popgate checks the digest
and logs in upstream as Dovecot's master user on the user's behalf."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import subprocess

import pytest

from corpus import simple_message
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import Popgate

POP_SECRET = "pop secret ü"  # the POP3 secret; the IMAP password differs


@pytest.fixture
def bridged(dovecot, user, tmp_path, request):
    """A gateway with APOP and CRAM-MD5 enabled for `user`."""
    mode = getattr(request, "param", "authzid")
    creds = tmp_path / "credentials"
    creds.write_text(f"# POP3 secrets\n{user.name}:{POP_SECRET}\n")
    master = tmp_path / "master-password"
    master.write_text(dovecot.master_password + "\n")
    creds.chmod(0o600)  # popgate refuses secret files others can read
    master.chmod(0o600)
    extra = (
        "auth:\n"
        f"  credentials_file: {creds}\n"
        f"  master_user: {dovecot.master_user}\n"
        f"  master_password_file: {master}\n"
        f"  master_login: {mode}\n"
        "  reload_interval: 200ms\n"
    )
    user.deliver(simple_message(1), simple_message(2))
    with Popgate(dovecot.imap_port, extra=extra) as pg:
        pg.creds = creds
        yield pg


def apop_digest(greeting: bytes, secret: str) -> str:
    timestamp = re.search(rb"<[^>]+>", greeting).group(0)
    return hashlib.md5(timestamp + secret.encode()).hexdigest()


@pytest.mark.parametrize("bridged", ["authzid", "separator"], indirect=True)
def test_apop_logs_in_through_the_master_user(bridged, user):
    with Pop3Raw(bridged.port) as c:
        assert c.answer(f"APOP {user.name} {apop_digest(c.greeting, POP_SECRET)}").startswith(b"+OK")
        assert c.answer("STAT").startswith(b"+OK 2 ")
        assert c.answer("DELE 1").startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
    assert len(user.uids()) == 1  # the master session acted on the user's mailbox
    # popgate never saw the user's IMAP password (POP_SECRET differs from
    # it), so only the master user can have opened the mailbox.
    assert 'mechanism="APOP"' in bridged.log_text()


def test_apop_failures_and_unique_timestamps(bridged, user):
    greetings = []
    for _ in range(3):
        with Pop3Raw(bridged.port) as c:
            greetings.append(re.search(rb"<[^>]+>", c.greeting).group(0))
            wrong = apop_digest(c.greeting, "not the secret")
            assert c.answer(f"APOP {user.name} {wrong}").startswith(b"-ERR [AUTH]")
    assert len(set(greetings)) == 3
    with Pop3Raw(bridged.port) as c:  # an unknown user looks the same
        digest = apop_digest(c.greeting, POP_SECRET)
        assert c.answer(f"APOP nobody-here {digest}") == b"-ERR [AUTH] Authentication failed.\r\n"


def test_cram_md5(bridged, user):
    with Pop3Raw(bridged.port) as c:
        assert "SASL CRAM-MD5 PLAIN LOGIN" in c.answer("CAPA").decode()
        c.send("AUTH CRAM-MD5\r\n")
        challenge = base64.b64decode(c.line()[2:].strip())
        digest = hmac.new(POP_SECRET.encode(), challenge, hashlib.md5).hexdigest()
        assert c.answer(base64.b64encode(f"{user.name} {digest}".encode()).decode()).startswith(b"+OK")
        assert c.answer("STAT").startswith(b"+OK 2 ")


def test_curl_prefers_cram_md5_and_can_use_apop(bridged, user):
    url = f"pop3://127.0.0.1:{bridged.port}/"
    base = ["curl", "-sS", "--max-time", "20", "-u", f"{user.name}:{POP_SECRET}"]
    out = subprocess.run(base + [url], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"1 ")
    out = subprocess.run(base + ["--login-options", "AUTH=+APOP", url], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    log = bridged.log_text()
    assert 'mechanism="CRAM-MD5"' in log and 'mechanism="APOP"' in log
    assert POP_SECRET not in log


def test_credentials_file_reloads(bridged, user):
    new = "changed secret"
    bridged.creds.write_text(f"{user.name}:{new}\n")
    wait_for(lambda: "credentials reloaded" in bridged.log_text(), 10, "the credentials reload")
    with Pop3Raw(bridged.port) as c:
        assert c.answer(f"APOP {user.name} {apop_digest(c.greeting, new)}").startswith(b"+OK")
    bridged.creds.write_text("garbage without a colon\n")
    wait_for(lambda: "credentials reload failed" in bridged.log_text(), 10, "the failed reload")
    assert "garbage" not in bridged.log_text()  # errors name lines, not content
    with Pop3Raw(bridged.port) as c:  # the previous credentials stay in service
        assert c.answer(f"APOP {user.name} {apop_digest(c.greeting, new)}").startswith(b"+OK")


def test_without_credentials_nothing_is_advertised_and_curl_uses_plain(gateway, user):
    user.deliver(simple_message(1))
    with Pop3Raw(gateway.port) as c:
        assert b"<" not in c.greeting
        capa = c.answer("CAPA").decode()
        assert "CRAM-MD5" not in capa and "SASL PLAIN LOGIN" in capa
        assert c.answer(f"APOP {user.name} {'0' * 32}").startswith(b"-ERR")
        assert c.answer("AUTH CRAM-MD5").startswith(b"-ERR")
    url = f"pop3://127.0.0.1:{gateway.port}/"
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", f"{user.name}:{user.password}", url],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f'user={user.name} mechanism="PLAIN"' in gateway.log_text()


def test_config_check_requires_master_user(dovecot, tmp_path):
    from popgate import binary

    cfg = tmp_path / "c.yaml"
    cfg.write_text('listeners:\n  - address: "127.0.0.1:0"\nupstream:\n  address: "127.0.0.1:143"\n'
                   f"auth:\n  credentials_file: {tmp_path}/none\n")
    out = subprocess.run([binary(), "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert out.returncode != 0 and "auth.credentials_file" in out.stderr
