"""The token broker, flow refresh_token: users enrol once with the device
grant (`popgate oauth enroll`, the test playing the user against the real
authorization server), then log in with USER/PASS only; popgate logs in to
Dovecot with XOAUTH2 and access tokens it refreshes itself."""

from __future__ import annotations

import os
import threading
import time

import pytest

from authserver import AuthServer, oauth2_dovecot_conf
from clients import download
from corpus import simple_message
from dovecot import Dovecot
from oauthrealm import CLIENT_SECRET, REFRESHED_OK, REJECTED, Realm, metric
from polling import wait_for
from pop3raw import Pop3Raw, from_address

USERS = ["ann", "bob", "cy", "dee", "ed", "fay", "gus", "hal"]


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    base = tmp_path_factory.mktemp("broker")
    secret = base / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    with AuthServer(clients={"popgate": CLIENT_SECRET}, access_token_ttl=5) as auth:
        dv = Dovecot(users={u: f"imap password of {u}" for u in USERS}, start=False)
        dv.extra_conf = oauth2_dovecot_conf(dv.dir, auth.keys_dir, "xoauth2")
        with dv.start():
            yield Realm(auth, dv, str(base / "state"), str(secret))


@pytest.fixture(scope="module")
def gateway(realm):
    with realm.popgate() as pg:
        yield pg


def test_enrolled_user_downloads_with_user_pass(realm, gateway, tmp_path):
    out = realm.enroll(gateway, "ann", "ann's pop3 password")
    assert "enrolled ann on route default" in out
    for i in range(1, 4):
        realm.dv.deliver("ann", simple_message(i))
    got = download("fetchmail", "127.0.0.1", gateway.port, "ann", "ann's pop3 password",
                   keep=True, workdir=tmp_path / "f")
    assert len(got) == 3
    got = download("poplib", "127.0.0.1", gateway.port, "ann", "ann's pop3 password",
                   keep=True, workdir=tmp_path / "p")
    assert len(got) == 3
    # Dovecot saw token logins, never a password.
    assert "user=<ann>, method=XOAUTH2" in realm.dv.log_text()
    assert "user=<ann>, method=PLAIN" not in realm.dv.log_text()


def test_short_lived_tokens_are_refreshed_over_a_minute_of_sessions(realm, gateway):
    realm.enroll(gateway, "bob", "bob pw")
    realm.dv.deliver("bob", simple_message(1))
    before = metric(gateway, REFRESHED_OK)
    end = time.monotonic() + 65
    sessions = 0
    while time.monotonic() < end:
        c = Pop3Raw(gateway.port)
        assert c.login("bob", "bob pw").startswith(b"+OK"), sessions
        assert c.answer("RETR 1").startswith(b"+OK")
        assert c.answer("QUIT").startswith(b"+OK")
        sessions += 1
        time.sleep(1)
    # 5-second tokens over 65 s: renewed many times, and reused between
    # renewals (fewer refreshes than sessions).
    refreshed = metric(gateway, REFRESHED_OK) - before
    assert 10 <= refreshed < sessions, (refreshed, sessions)


def test_twenty_simultaneous_logins_refresh_once(realm):
    # Tokens that outlive the test: 20 logins, one refresh, however slow
    # the machine. A second authorization server, trusted by the same
    # Dovecot (its key goes into the same directory).
    with AuthServer(clients={"popgate": CLIENT_SECRET}, keys_dir=realm.auth.keys_dir) as auth:
        long_lived = Realm(auth, realm.dv, realm.state_dir + "-long", realm.secret_file)
        with long_lived.popgate() as pg:
            long_lived.enroll(pg, "cy", "cy pw")
            before = metric(pg, REFRESHED_OK)
            barrier = threading.Barrier(20)
            answers: list[bytes] = []

            def login() -> None:
                c = Pop3Raw(pg.port)
                c.send("USER cy\r\n")
                c.line()
                barrier.wait(30)
                answers.append(c.answer("PASS cy pw"))
                c.answer("QUIT")
                c.close()

            threads = [threading.Thread(target=login) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert len(answers) == 20 and all(a.startswith(b"+OK") for a in answers), answers
            assert metric(pg, REFRESHED_OK) - before == 1
            refreshes = [t for t in auth.issued("cy") if t["kind"] == "refresh_token"]
            # The device grant's and the one rotation.
            assert len({t["value"] for t in refreshes}) == 2, refreshes


def test_revoked_refresh_token_asks_to_enrol_again(realm, gateway):
    realm.enroll(gateway, "dee", "dee pw")
    assert realm.auth.revoke_grants("dee") >= 1
    before = metric(gateway, REJECTED)
    with Pop3Raw(gateway.port) as c:
        answer = c.login("dee", "dee pw")
    assert answer.startswith(b"-ERR [AUTH]") and b"enrol again" in answer, answer
    assert metric(gateway, REJECTED) - before == 1
    assert "refused the refresh token; the user must enrol again" in gateway.log_text()


def test_wrong_pop3_password_is_a_failed_login_with_penalty(realm):
    limits = "  auth_penalty_max: 2s\n  connections_per_ip: 0\n"
    with realm.popgate(limits=limits) as pg:
        realm.enroll(pg, "ed", "ed pw")
        with from_address(pg.port, "127.0.2.1") as c:
            wrong = c.login("ed", "not ed's pw")
        # The next login at the user, from another address and with the
        # right password, waits out the user's penalty before its check,
        # as after any wrong password.
        with from_address(pg.port, "127.0.2.2") as c:
            assert c.login("ed", "ed pw").startswith(b"+OK")
        assert metric(pg, 'popgate_auth_throttled_total{kind="user"}') >= 1
        with from_address(pg.port, "127.0.2.3") as c:
            unknown = c.login("nobody-enrolled", "ed pw")
        assert wrong == unknown == b"-ERR [AUTH] Authentication failed.\r\n"
        assert metric(pg, 'popgate_logins_total{mechanism="USER",result="auth_failed"}') == 2


def test_the_store_and_the_log_hold_no_token(realm, gateway):
    realm.enroll(gateway, "fay", "fay pw")
    with Pop3Raw(gateway.port) as c:
        assert c.login("fay", "fay pw").startswith(b"+OK")
    store = os.path.join(realm.state_dir, "popgate-state.sqlite")
    raw = open(store, "rb").read()
    assert b"fay" in raw  # the record is there, keyed by the user
    tokens = [t["value"] for t in realm.auth.issued() if t.get("value")]
    assert any(t["account"] == "fay" and t["kind"] == "refresh_token"
               for t in realm.auth.issued("fay"))
    log = gateway.log_text()
    assert "DEBUG" in log and "access token obtained" in log
    for secret in tokens + [CLIENT_SECRET, "fay pw"]:
        assert secret.encode() not in raw
        assert secret not in log
    assert any(t["kind"] == "access_token" for t in realm.auth.issued())
    # The gauges, updated every 5 s: users enrolled, and an access token held.
    wait_for(lambda: metric(gateway, 'popgate_oauth_enrolled_users{route="default"}') >= 1,
             30, "the enrolled users gauge")
    _, text = gateway.http("/metrics")
    assert 'popgate_oauth_access_token_expiry_seconds{route="default"}' in text
