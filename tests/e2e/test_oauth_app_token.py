"""The token broker, flow client_credentials: one application token from
the real authorization server opens every mailbox, so popgate checks each
POP3 password against a credentials file of hashes (SHA-512-crypt, bcrypt)
before it hands the token out. The Dovecot takes the application token
through an oauth2 master passdb (`USER*popgate`: the token's subject is the
client id), as Microsoft 365 takes an app-only token for any mailbox."""

from __future__ import annotations

import subprocess

import pytest

from authserver import AuthServer, oauth2_dovecot_conf
from clients import download
from corpus import simple_message
from dovecot import Dovecot
import popgate as popgate_module
from popgate import Popgate
from pop3raw import Pop3Raw

CLIENT_SECRET = "the app's client secret"
# glibc crypt("ann secret", "$6$annsalt"), crypt("bob secret", "$2b$04$...")
HASHES = {
    "ann": ("ann secret", "$6$annsalt$"),
    "bob": ("bob secret", "$2b$04$abcdefghijklmnopqrstuv"),
}
OK = 'popgate_oauth_token_refreshes_total{result="ok",route="default"}'


def crypt(password: str, salt: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypt as _crypt
    return _crypt.crypt(password, salt)


def metric(pg: Popgate, series: str) -> float:
    _, text = pg.http("/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def oauth2_yaml(auth: AuthServer, secret_file) -> str:
    return (
        "  oauth2:\n"
        f'    token_url: "{auth.token_url}"\n'
        "    client_id: popgate\n"
        f"    client_secret_file: {secret_file}\n"
        '    scope: "imap"\n'
        "    flow: client_credentials\n"
        '    login_as: "{user}*popgate"\n'
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    secret = base / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    creds = base / "credentials"
    creds.write_text("".join(f"{u}:{crypt(pw, salt)}\n" for u, (pw, salt) in HASHES.items()))
    for f in (secret, creds):
        f.chmod(0o600)
    with AuthServer(clients={"popgate": CLIENT_SECRET}) as auth:
        dv = Dovecot(users={u: "imap password nobody sends" for u in HASHES}, start=False)
        dv.extra_conf = oauth2_dovecot_conf(dv.dir, auth.keys_dir, "xoauth2", master=True)
        with dv.start():
            extra = f"auth:\n  credentials_file: {creds}\n"
            with Popgate(dv.imap_port, upstream_extra=oauth2_yaml(auth, secret), extra=extra,
                         metrics=True, log_level="trace") as pg:
                pg.auth, pg.dv = auth, dv
                pg.secret_file, pg.creds = secret, creds
                yield pg


def test_hashed_passwords_and_one_app_token_for_every_user(app, tmp_path):
    for user in HASHES:
        app.dv.deliver(user, simple_message(1))
    got = download("fetchmail", "127.0.0.1", app.port, "ann", "ann secret",
                   keep=True, workdir=tmp_path / "f")
    assert len(got) == 1
    got = download("poplib", "127.0.0.1", app.port, "bob", "bob secret",
                   keep=True, workdir=tmp_path / "p")
    assert len(got) == 1
    # One application token served both users.
    assert metric(app, OK) == 1
    log = app.dv.log_text()
    assert "user=<ann>, method=XOAUTH2" in log and "user=<bob>, method=XOAUTH2" in log
    tokens = [t["value"] for t in app.auth.issued()]
    assert tokens
    pg_log = app.log_text()
    for secret in tokens + [CLIENT_SECRET, "ann secret", "bob secret"]:
        assert secret not in pg_log


def test_wrong_and_unknown_passwords_never_get_the_app_token(app):
    before = metric(app, OK) + metric(app, OK.replace('"ok"', '"unavailable"'))
    with Pop3Raw(app.port) as c:
        assert c.login("ann", "bob secret") == b"-ERR [AUTH] Authentication failed.\r\n"
        assert c.login("nobody", "ann secret") == b"-ERR [AUTH] Authentication failed.\r\n"
    assert metric(app, OK) + metric(app, OK.replace('"ok"', '"unavailable"')) == before


def test_start_refuses_the_flow_without_a_credentials_source(app, tmp_path):
    cfg = tmp_path / "popgate.yaml"
    cfg.write_text(
        'listeners:\n  - address: "127.0.0.1:0"\n'
        f'upstream:\n  address: "127.0.0.1:{app.dv.imap_port}"\n'
        + oauth2_yaml(app.auth, app.secret_file))
    r = subprocess.run([popgate_module.binary(), "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert "upstream.oauth2.flow" in r.stderr and "auth.credentials_file" in r.stderr, r.stderr
    assert "at line 10 " in r.stderr, r.stderr  # the flow key
