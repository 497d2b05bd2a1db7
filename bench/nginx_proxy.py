"""nginx's mail proxy in front of the benchmark's Dovecot: the second
reference beside Dovecot's own POP3 in d and e (plaintext) and h and j
(POP3S towards the clients).

Debian's ``nginx`` with ``libnginx-mod-mail`` (scripts/install-bench-deps.sh
installs them).  The throwaway instance runs as root in the foreground
with its own prefix directory, one worker per core, and listens on free
loopback ports: one plaintext POP3 server and, with a certificate, one
POP3S server.  For each login it asks ``bench/nginx_auth.py`` (auth_http,
a process of its own) where to go, which always answers Dovecot's
plaintext POP3 port; nginx then logs in there with USER and PASS and
relays the session.  nginx's mail proxy has no TLS towards its backends,
so in h and j its link to Dovecot is plaintext, where popgate's is IMAPS.

nginx has no per-user or per-address session limits by default and its
auth_http answers without delay (no Auth-Wait), as the reference Dovecot
and popgate are configured for these workloads.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dovecot import die_with_parent, free_port
from pop3client import HOST, TLS_NAME

MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
BENCH = Path(__file__).resolve().parent


def missing() -> str:
    """Why nginx cannot run here ("" when it can)."""
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        return "nginx is not installed (bash scripts/install-bench-deps.sh)"
    if not os.path.exists(MODULE):
        return f"nginx's mail module {MODULE} is missing (libnginx-mod-mail)"
    return ""


def _nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _worker_user() -> str:
    """nobody and its own group: the workers must not run as root, and
    Debian has no group called nobody."""
    pw = pwd.getpwnam("nobody")
    return f"{pw.pw_name} {grp.getgrgid(pw.pw_gid).gr_name}"


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class NginxMail:
    """nginx (master and workers) and its auth_http responder; ``port`` is
    the plaintext POP3 port, ``tls_port`` the POP3S one (0 without a
    certificate).  Stopped by ``cleanup()``."""

    @classmethod
    def with_pki(cls, pop3_port: int, pki) -> "NginxMail":
        """POP3S with popgate's certificate from the benchmark's PKI
        (tests/e2e/certs.py), or plaintext only when ``pki`` is None."""
        if pki is None:
            return cls(pop3_port)
        return cls(pop3_port, cert=pki.popgate.chain, key=pki.popgate.key, ca=pki.ca.cert)

    def __init__(self, pop3_port: int, *, cert: str | None = None, key: str | None = None,
                 ca: str | None = None, nofile: int = 4096) -> None:
        self.dir = tempfile.mkdtemp(prefix="pgbench-nginx-")
        os.chmod(self.dir, 0o755)
        self.procs: list[subprocess.Popen] = []
        self.port = self.tls_port = 0
        self.ca = ca
        try:
            self.auth_port = free_port()
            out = open(Path(self.dir) / "auth.log", "ab")
            self.auth = subprocess.Popen(
                [sys.executable, str(BENCH / "nginx_auth.py"), "--port", str(self.auth_port),
                 "--server-port", str(pop3_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=die_with_parent)
            out.close()
            self.procs.append(self.auth)
            self._wait_port(self.auth_port, b"")
            self.port = free_port()
            self.tls_port = free_port() if cert else 0
            conf = Path(self.dir) / "nginx.conf"
            conf.write_text(self._config(cert, key, nofile))
            log = open(Path(self.dir) / "stdio.log", "ab")
            self.nginx = subprocess.Popen(
                [_nginx_binary(), "-p", self.dir, "-c", str(conf),
                 "-e", str(Path(self.dir) / "error.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=die_with_parent)
            log.close()
            self.procs.append(self.nginx)
            self._wait_port(self.port, b"+OK")
            if self.tls_port:
                self._wait_port(self.tls_port, b"+OK", tls=True)
        except BaseException:
            self.cleanup()
            raise

    def _config(self, cert: str | None, key: str | None, nofile: int) -> str:
        d = self.dir
        tls = ""
        if cert:
            tls = (f"    server {{\n      listen {HOST}:{self.tls_port} ssl;\n"
                   f"      protocol pop3;\n      ssl_certificate {cert};\n"
                   f"      ssl_certificate_key {key};\n"
                   # nginx 1.22's default stops at TLS 1.2; Dovecot and
                   # popgate negotiate 1.3 with the same client.
                   f"      ssl_protocols TLSv1.2 TLSv1.3;\n    }}\n")
        return f"""\
# Throwaway instance; generated by bench/nginx_proxy.py
load_module {MODULE};
daemon off;
master_process on;
user {_worker_user()};
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
  worker_connections {max(1024, nofile // 2)};
}}
mail {{
  server_name {TLS_NAME};
  auth_http {HOST}:{self.auth_port}/auth;
  proxy_pass_error_message on;
  pop3_auth plain;
  server {{
    listen {HOST}:{self.port};
    protocol pop3;
  }}
{tls}}}
"""

    def _wait_port(self, port: int, greeting: bytes, tls: bool = False,
                   timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"nginx or its auth responder exited:\n{self.log_text()}")
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    if not greeting:
                        return
                    if tls:
                        ctx = ssl.create_default_context(cafile=self.ca)
                        s = ctx.wrap_socket(s, server_hostname=TLS_NAME)
                    if s.recv(64).startswith(greeting):
                        return
            except (OSError, ssl.SSLError) as e:
                last = str(e)
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer on port {port} ({last}):\n{self.log_text()}")

    def log_text(self) -> str:
        out = ""
        for name in ("error.log", "stdio.log", "auth.log"):
            try:
                out += (Path(self.dir) / name).read_text(errors="replace")[-2000:]
            except OSError:
                pass
        return out

    def pids(self) -> list[int]:
        """nginx's master, its workers and the auth responder."""
        out = [p.pid for p in self.procs if p.poll() is None]
        if getattr(self, "nginx", None) is not None:
            try:
                with open(f"/proc/{self.nginx.pid}/task/{self.nginx.pid}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
        return out

    def cpu_seconds(self) -> float:
        """CPU time so far of nginx's processes and the responder (a worker
        that was replaced takes its time with it; workers live as long as
        the benchmark's nginx does)."""
        total = 0.0
        for pid in self.pids():
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass
        return total

    def check_no_secret(self, password: str) -> None:
        """The password the clients sent must appear in no log of nginx
        or of the responder (which sees it in every Auth-Pass header)."""
        for name in ("error.log", "stdio.log", "auth.log"):
            try:
                data = (Path(self.dir) / name).read_bytes()
            except OSError:
                continue
            if password.encode() in data:
                raise RuntimeError(f"nginx: the clients' password is in {name}")

    def version(self) -> str:
        out = subprocess.run([_nginx_binary(), "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().replace("nginx version: ", "")

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
