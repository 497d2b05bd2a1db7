"""XOAUTH2 and OAUTHBEARER passed through to a real Dovecot whose oauth2
passdb validates JWT access tokens from a real authorization server
(oidc-provider, authserver.py): curl's --oauth2-bearer and poplib log in
with tokens the server issued through the device grant; an expired token
is refused by Dovecot and the client hears -ERR [AUTH]."""

from __future__ import annotations

import base64
import os
import poplib
import subprocess
import tempfile

import pytest

from authserver import AuthServer, jwt_claims, oauth2_dovecot_conf, wait_expired
from corpus import simple_message
from dovecot import Dovecot
from popgate import Popgate

USERS = {"ann": "ann's IMAP password", "bob": "bob's IMAP password"}


@pytest.fixture(scope="module", params=["xoauth2 oauthbearer", "xoauth2"])
def realm(request):
    """An authorization server, a Dovecot trusting its key, and popgate at
    trace level in front of that Dovecot. The Dovecot offers both token
    mechanisms, or XOAUTH2 alone (as Microsoft 365 does): popgate offers
    what its upstream offers, and curl takes OAUTHBEARER whenever offered."""
    with AuthServer() as auth:
        dv = Dovecot(users=USERS, start=False)
        dv.extra_conf = oauth2_dovecot_conf(dv.dir, auth.keys_dir, request.param)
        dv.offered = request.param.upper().split()
        with dv.start():
            with Popgate(dv.imap_port, log_level="trace") as pg:
                yield auth, dv, pg


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(user: str, token: str) -> str:
    raw = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def curl(port: int, user: str, token: str, path: str = "") -> subprocess.CompletedProcess:
    # The token goes in a config file (mode 600), not on the command line.
    fd, cfg = _private_file()
    with os.fdopen(fd, "w") as f:
        f.write(f'oauth2-bearer = "{token}"\n'
                f'url = "pop3://{user}@127.0.0.1:{port}/{path}"\n'
                'silent\nshow-error\nmax-time = 30\n')
    try:
        return subprocess.run(["curl", "-q", "-K", cfg], capture_output=True, timeout=60)
    finally:
        os.unlink(cfg)


def _private_file() -> tuple[int, str]:
    return tempfile.mkstemp(prefix="curl-oauth-")


def test_curl_logs_in_with_a_token_from_the_authorization_server(realm):
    auth, dv, pg = realm
    mechanism = dv.offered[-1]  # curl's choice: OAUTHBEARER if offered
    dv.deliver("ann", simple_message(1))
    tokens = auth.device_grant("ann")
    assert jwt_claims(tokens["access_token"])["sub"] == "ann"
    listing = curl(pg.port, "ann", tokens["access_token"])
    assert listing.returncode == 0, (listing.stderr, pg.log_text()[-3000:], dv.log_text()[-1500:])
    assert listing.stdout.startswith(b"1 "), listing.stdout
    body = curl(pg.port, "ann", tokens["access_token"], "1")
    assert body.returncode == 0, body.stderr
    assert b"Subject: Message 1" in body.stdout
    assert f"user=<ann>, method={mechanism}" in dv.log_text()
    # Another user's name with ann's token: Dovecot's passdb compares the
    # token's subject with the login name.
    other = curl(pg.port, "bob", tokens["access_token"])
    assert other.returncode != 0


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_poplib_logs_in_with_a_token(realm, mechanism):
    auth, dv, pg = realm
    dv.deliver("bob", simple_message(7))
    token = auth.device_grant("bob")["access_token"]
    response = (xoauth2 if mechanism == "XOAUTH2" else oauthbearer)("bob", token)
    p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
    if mechanism not in dv.offered:
        # Not offered upstream: not advertised, and refused without a try.
        try:
            assert mechanism not in p.capa()["SASL"]
            with pytest.raises(poplib.error_proto) as refused:
                p._shortcmd(f"AUTH {mechanism} {response}")
            assert refused.value.args[0].startswith(b"-ERR"), refused.value.args
        finally:
            p.quit()
        return
    try:
        assert mechanism in p.capa()["SASL"]
        assert p._shortcmd(f"AUTH {mechanism} {response}").startswith(b"+OK")
        count, _size = p.stat()
        assert count >= 1
    finally:
        p.quit()


def test_expired_token_is_refused_with_auth_code(realm):
    auth, dv, pg = realm
    # A second authorization server with 2-second access tokens; its key
    # goes into the same directory, so Dovecot trusts it too.
    with AuthServer(access_token_ttl=2, keys_dir=auth.keys_dir) as short:
        token = short.device_grant("ann")["access_token"]
        p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
        assert p._shortcmd(f"AUTH XOAUTH2 {xoauth2('ann', token)}").startswith(b"+OK")
        p.quit()
        wait_expired(token)
        p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
        with pytest.raises(poplib.error_proto) as refused:
            p._shortcmd(f"AUTH XOAUTH2 {xoauth2('ann', token)}")
        assert str(refused.value).startswith("b'-ERR [AUTH]"), refused.value
        p.quit()
        # Dovecot refused it (the token's `exp`), not popgate.
        assert "oauth2(ann," in dv.log_text() and "Local validation failed" in dv.log_text()


def test_tokens_never_reach_the_log(realm):
    auth, dv, pg = realm
    token = auth.device_grant("ann")["access_token"]
    for mech in dv.offered:
        response = (xoauth2 if mech == "XOAUTH2" else oauthbearer)("ann", token)
        p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
        assert p._shortcmd(f"AUTH {mech} {response}").startswith(b"+OK")
        p.quit()
    log = pg.log_text()
    assert "DEBUG" in log and "logged in" in log  # verbose enough to show a leak
    signature = token.rsplit(".", 1)[1]
    for secret in (token, signature, xoauth2("ann", token), oauthbearer("ann", token)):
        assert secret not in log, (secret[:12], log[log.find(secret) - 300:log.find(secret) + 50])
