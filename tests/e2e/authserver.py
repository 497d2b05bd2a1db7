"""A throwaway OAuth2 authorization server (oidc-provider from npm,
``tests/e2e/authserver/server.mjs``) on a free loopback port, and a Dovecot
whose oauth2 passdb validates its JWT access tokens locally.

``AuthServer`` writes its RS256 public key into ``keys_dir`` as Dovecot's
``local_validation_key_dict`` expects it; ``oauth2_dovecot_conf()`` is the
``extra_conf`` that turns on XOAUTH2 and OAUTHBEARER in a test Dovecot with
that key directory.  ``device_grant()`` and ``approve()`` play the user's
part of the device authorization grant (RFC 8628) with a plain HTTP client,
as a browser would.

The npm packages are installed by scripts/install-deps.sh
(scripts/install-authserver.sh) into tests/e2e/authserver/node_modules.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from dovecot import _parent_dir, die_with_parent
from reaper import Reaper

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "authserver")
_STARTED: "Reaper[AuthServer]" = Reaper(lambda a: a.stop())


class AuthServer:
    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        access_token_ttl: int = 300,
        keys_dir: str | None = None,
    ) -> None:
        # Beside the Dovecot instances: Dovecot's auth process (user
        # dovecot) reads the key from here, which a private $TMPDIR forbids.
        self.dir = tempfile.mkdtemp(prefix="pgauth-", dir=_parent_dir())
        os.chmod(self.dir, 0o755)
        _STARTED.add(self)
        self.clients = dict(clients or {"popgate": "popgate-client-secret"})
        self.keys_dir = keys_dir or os.path.join(self.dir, "keys")
        self.log_path = os.path.join(self.dir, "authserver.log")
        conf = {
            "port": 0,
            "keys_dir": self.keys_dir,
            "access_token_ttl": access_token_ttl,
            "clients": [{"client_id": k, "client_secret": v} for k, v in self.clients.items()],
        }
        conf_path = os.path.join(self.dir, "config.json")
        with open(conf_path, "w") as f:
            json.dump(conf, f)
        if not os.path.isdir(os.path.join(HERE, "node_modules", "oidc-provider")):
            raise RuntimeError("oidc-provider is not installed: run scripts/install-deps.sh")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["node", os.path.join(HERE, "server.mjs"), conf_path],
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.match(r"listening (\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"authorization server did not start: {line!r} {self.log()}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        _STARTED.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "AuthServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def device_url(self) -> str:
        return self.url + "/device/auth"

    # ------------------------------------------------------------ the client

    def post(self, path: str, form: dict[str, str]) -> tuple[int, dict]:
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                body = r.read()
                return r.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body else {}

    def client_form(self, client_id: str = "popgate") -> dict[str, str]:
        return {"client_id": client_id, "client_secret": self.clients[client_id]}

    def device_grant(self, login: str, client_id: str = "popgate") -> dict:
        """The whole device grant, the user's part included: the token
        response (access_token, refresh_token, expires_in)."""
        status, started = self.post(
            "/device/auth", {**self.client_form(client_id), "scope": "openid offline_access imap"})
        assert status == 200, started
        approve(started["verification_uri_complete"], login)
        status, tokens = self.post("/token", {
            **self.client_form(client_id),
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": started["device_code"],
        })
        assert status == 200, tokens
        return tokens

    def revoke(self, token: str, hint: str = "refresh_token", client_id: str = "popgate") -> None:
        status, body = self.post("/token/revocation", {
            **self.client_form(client_id), "token": token, "token_type_hint": hint})
        assert status == 200, body


    def issued(self, login: str | None = None) -> list[dict]:
        """Every token issued so far (kind, account, value), for searching
        logs and stores for them."""
        q = "?" + urllib.parse.urlencode({"login": login}) if login else ""
        with urllib.request.urlopen(self.url + "/admin/issued" + q, timeout=20) as r:
            return json.loads(r.read())

    def revoke_grants(self, login: str) -> int:
        """Destroys the user's grants, as an administrator revoking the
        application's access: their refresh tokens stop working."""
        req = urllib.request.Request(
            self.url + "/admin/revoke?" + urllib.parse.urlencode({"login": login}),
            data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())["revoked"]


_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')
_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


def approve(verification_uri_complete: str, login: str) -> str:
    """The user's part of the device grant: open the verification URL,
    confirm the code, sign in as ``login``. Returns the last page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(verification_uri_complete, timeout=20) as r:
        html, url = r.read().decode(), r.geturl()
    # The confirm page (hidden xsrf and user_code), then the sign-in form.
    for _ in range(4):
        action = _ACTION.search(html)
        if not action:
            break
        form = dict(_HIDDEN.findall(html))
        if 'name="login"' in html:
            form["login"] = login
        elif "user_code" in form:
            form["confirm"] = "yes"
        target = urllib.parse.urljoin(url, action.group(1))
        with opener.open(target, data=urllib.parse.urlencode(form).encode(), timeout=20) as r:
            html, url = r.read().decode(), r.geturl()
    if "Sign-in Success" not in html and "success" not in html.lower():
        raise AssertionError(f"device grant not approved: {html[:500]}")
    return html


def jwt_claims(token: str) -> dict:
    """The payload of a JWT (not verified: Dovecot does that)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def wait_expired(token: str, timeout: float = 120) -> None:
    """Waits until the wall clock is past the token's `exp`."""
    exp = jwt_claims(token)["exp"]
    deadline = time.monotonic() + timeout
    while time.time() <= exp + 1:
        assert time.monotonic() < deadline, "token did not expire"
        time.sleep(0.2)


def oauth2_dovecot_conf(dovecot_dir: str, keys_dir: str,
                        mechanisms: str = "xoauth2 oauthbearer", master: bool = False) -> str:
    """extra_conf for tests.e2e.dovecot.Dovecot: XOAUTH2 and OAUTHBEARER
    checked by the oauth2 passdb against JWTs signed with a key in
    ``keys_dir`` (no call to the authorization server); the token's `sub`
    is the user.  ``mechanisms`` are the token mechanisms offered (Microsoft
    365 offers XOAUTH2 alone).  ``master``: the passdb is a master passdb,
    for application tokens (client credentials, `sub` = the client id)
    that open any mailbox as ``USER*CLIENT_ID``."""
    ext = os.path.join(dovecot_dir, "dovecot-oauth2.conf.ext")
    with open(ext, "w") as f:
        f.write(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={keys_dir.rstrip('/')}/\n"
            "username_attribute = sub\n"
            "username_format = %u\n"
        )
    os.chmod(ext, 0o644)
    return (
        f"auth_mechanisms = plain login {mechanisms}\n"
        f"passdb {{\n  driver = oauth2\n  mechanisms = {mechanisms}\n"
        + ("  master = yes\n" if master else "") +
        f"  args = {ext}\n}}\n"
    )
