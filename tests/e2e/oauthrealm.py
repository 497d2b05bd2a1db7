"""The token broker's test setting: an authorization server, a Dovecot
trusting its tokens, a state directory and a client secret file; popgate
configs with an `oauth2` section on the default route, and `popgate oauth
enroll` driven with the test playing the user (``Realm.enroll``)."""

from __future__ import annotations

import re
import subprocess

from authserver import AuthServer, approve
from dovecot import Dovecot
import popgate as popgate_module
from popgate import Popgate

CLIENT_SECRET = "the client secret"

def metric(pg: Popgate, series: str) -> float:
    _, text = pg.http("/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


REFRESHED_OK = 'popgate_oauth_token_refreshes_total{result="ok",route="default"}'
REJECTED = 'popgate_oauth_token_refreshes_total{result="rejected",route="default"}'


class Realm:
    def __init__(self, auth: AuthServer, dv: Dovecot, state_dir: str, secret_file: str) -> None:
        self.auth, self.dv, self.state_dir, self.secret_file = auth, dv, state_dir, secret_file

    def oauth2_yaml(self, flow: str = "refresh_token", token_url: str | None = None) -> str:
        return (
            "  oauth2:\n"
            f'    token_url: "{token_url or self.auth.token_url}"\n'
            f'    device_authorization_url: "{self.auth.device_url}"\n'
            "    client_id: popgate\n"
            f"    client_secret_file: {self.secret_file}\n"
            '    scope: "openid offline_access imap"\n'
            "    mechanism: xoauth2\n"
            f"    flow: {flow}\n"
            "    timeout: 5s\n"
        )

    def popgate(self, limits: str | None = None, token_url: str | None = None, **kw) -> Popgate:
        kw.setdefault("log_level", "trace")
        if limits is not None:
            kw["limits"] = limits
        return Popgate(self.dv.imap_port, upstream_extra=self.oauth2_yaml(token_url=token_url),
                       metrics=True,
                       extra=f"state:\n  path: {self.state_dir}\n", **kw)

    def enroll(self, pg: Popgate, user: str, password: str, login: str | None = None) -> str:
        """`popgate oauth enroll` for `user`, signing in at the authorization
        server as `login` (the user by default). Returns its output."""
        proc = subprocess.Popen(
            [popgate_module.binary(), "oauth", "enroll", "--config", pg.config_path,
             "--user", user, "--password-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout
        proc.stdin.write(password.encode() + b"\n")
        proc.stdin.close()
        proc.stdin = None
        shown = proc.stdout.readline().decode()
        m = re.search(r"open (\S+)", shown)
        assert m, shown + proc.stderr.read().decode()
        approve(m.group(1), login or user)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
        return shown + out.decode()
