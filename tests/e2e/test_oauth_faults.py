"""The token endpoint failing: down, slow, or answering garbage. New logins
get -ERR [SYS/TEMP], popgate's log holds none of the tokens and secrets that
crossed, and sessions already logged in go on."""

from __future__ import annotations

import itertools
import re
import urllib.parse

import pytest

from authserver import AuthServer, oauth2_dovecot_conf
from corpus import simple_message
from dovecot import Dovecot
from oauthrealm import CLIENT_SECRET, Realm, metric
from pop3raw import Pop3Raw
from tokenfault import TokenFault

UNAVAILABLE = b"-ERR [SYS/TEMP] Sign-in service unavailable, try again later.\r\n"
FAILED = 'popgate_oauth_token_refreshes_total{result="unavailable",route="default"}'
_users = itertools.count(1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    secret = base / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    secret.chmod(0o600)
    with AuthServer(clients={"popgate": CLIENT_SECRET}) as auth:
        users = {f"f{i}": "imap password" for i in range(1, 20)}
        dv = Dovecot(users=users, start=False)
        dv.extra_conf = oauth2_dovecot_conf(dv.dir, auth.keys_dir, "xoauth2")
        with dv.start():
            realm = Realm(auth, dv, str(base / "state"), str(secret))
            # Enrolments go to the real server through this one's config.
            with realm.popgate() as enrolling:
                yield realm, enrolling


@pytest.fixture
def broken(setting):
    """A popgate sharing the store, asking for tokens through a fault
    point of its own."""
    realm, enrolling = setting
    with TokenFault(realm.auth.token_url) as fault:
        with realm.popgate(token_url=fault.url) as pg:
            yield realm, enrolling, fault, pg


def fresh_user(realm, pg) -> str:
    """An enrolled user with no access token held yet."""
    name = f"f{next(_users)}"
    realm.dv.deliver(name, simple_message(1))
    realm.enroll(pg, name, f"{name} pw")
    return name


def secrets_crossed(fault: TokenFault) -> set[str]:
    """Every value the token endpoint's requests and answers carried."""
    out = {CLIENT_SECRET}
    for body in fault.seen:
        text = body.decode("utf-8", "replace")
        for _k, v in urllib.parse.parse_qsl(text):
            out.add(v)
        out.update(re.findall(r'"(?:access|refresh)_token":"([^"]+)"', text))
    return {s for s in out if len(s) >= 8 and s not in ("refresh_token", "popgate")}


@pytest.mark.parametrize("mode", ["slow", "not_json", "no_token", "html_500", "huge", "reset", "down"])
def test_token_endpoint_faults_answer_sys_temp_and_spare_running_sessions(broken, mode):
    realm, enrolling, fault, pg = broken
    running, waiting = fresh_user(realm, enrolling), fresh_user(realm, enrolling)
    fault.mode = "pass"
    session = Pop3Raw(pg.port)
    assert session.login(running, f"{running} pw").startswith(b"+OK")
    before = metric(pg, FAILED)
    fault.release.clear()
    if mode == "down":
        fault.down()
    fault.mode = mode
    try:
        with Pop3Raw(pg.port) as c:
            assert c.login(waiting, f"{waiting} pw") == UNAVAILABLE
    finally:
        fault.release.set()
    assert metric(pg, FAILED) - before == 1
    # The session logged in before goes on.
    assert session.answer("RETR 1").startswith(b"+OK")
    assert session.answer("QUIT").startswith(b"+OK")
    session.close()
    log = pg.log_text()
    assert "no access token from the authorization server" in log
    leaked = sorted(s for s in secrets_crossed(fault) if s in log)
    assert not leaked, leaked
