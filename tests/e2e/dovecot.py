"""A throwaway Dovecot instance for end-to-end tests.

``Dovecot`` starts ``dovecot -F -c <conf>`` as root in a short temporary
directory (``/dev/shm/pgdv-XXXX`` when /dev/shm is a roomy tmpfs, else
``/tmp/pgdv-XXXX``; ``$POPGATE_E2E_TMPDIR`` overrides), listening only on
127.0.0.1 on free ports for plaintext IMAP and POP3.  Each user has a
one-line passwd-file in that directory (passwd.d/u-<name>).  All mail of all
users is Maildir owned by one unprivileged system account
(``mail``, else ``nobody``): Dovecot's imap and pop3 processes refuse to
access mail as root ("Mail access not allowed for root"), whatever
first_valid_uid says.  Files the harness writes are chowned to that account.

Typical use::

    with Dovecot(users={"alice": "secret"}) as dv:
        dv.deliver("alice", b"Subject: hi\\n\\nbody\\n")
        conn = dv.imap("alice")
        ...

Password restrictions: passwd-file separates fields with ':', so a test
password must not contain ':'.  Dovecot's auth process also refuses any
password with a control character below 0x20, TAB included ("Attempted login
with password having illegal chars").  Everything else works: spaces
(leading, trailing, repeated), quotes, backslashes, braces (even a leading
"{SHA}"), '%', '#', DEL and UTF-8; the file stores ``{PLAIN}<password>``
verbatim and Dovecot neither unescapes nor expands it.  User names are
case-sensitive and used verbatim (auth_username_format = %u); they must not
contain ':', '/', '*' (the master user separator), whitespace or control
characters.

Set POPGATE_E2E_KEEP=1 to keep instance directories (config, log, Maildirs)
after stop() for inspection.
"""

from __future__ import annotations

import ctypes
import imaplib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Iterable, Mapping

from reaper import Reaper

HOST = "127.0.0.1"

# Instances still running; stopped at interpreter exit.
_RUNNING: "Reaper[Dovecot]" = Reaper(lambda dv: dv.stop())
_stop_all_at_exit = _RUNNING.stop_all


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_free_port = free_port


def tls_conf(cert_path: str, key_path: str, imaps_port: int = 0,
             pop3s_port: int = 0) -> str:
    """extra_conf that turns on TLS: STARTTLS/STLS on the plaintext ports
    and, for non-zero ports, implicit-TLS IMAPS/POP3S listeners on
    127.0.0.1.  Dovecot merges these service blocks with the generated ones
    (same listener names), so later settings win."""
    conf = f"ssl = yes\nssl_cert = <{cert_path}\nssl_key = <{key_path}\n"
    if imaps_port:
        conf += ("service imap-login {\n  inet_listener imaps {\n"
                 f"    address = {HOST}\n    port = {imaps_port}\n  }}\n}}\n")
    if pop3s_port:
        conf += ("service pop3-login {\n  inet_listener pop3s {\n"
                 f"    address = {HOST}\n    port = {pop3s_port}\n  }}\n}}\n")
    return conf


def die_with_parent() -> None:
    """In the child: become a process group leader and ask the kernel to send
    SIGTERM when the parent dies, so a killed test run leaves no Dovecot
    (nor popgate, for the benchmark)."""
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


_pdeathsig_preexec = die_with_parent


def _setpgid_preexec() -> None:
    os.setpgid(0, 0)


def _parent_dir() -> str:
    """Where instance directories go: $POPGATE_E2E_TMPDIR, else /dev/shm
    when it is a roomy tmpfs (Maildir writes are several times faster there
    than on a disk), else /tmp.  Paths stay short for unix sockets."""
    env = os.environ.get("POPGATE_E2E_TMPDIR")
    if env:
        return env
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= (2 << 30) and os.access("/dev/shm", os.W_OK | os.X_OK):
            return "/dev/shm"
    except OSError:
        pass
    return "/tmp"


def _mail_account(name: str | None) -> tuple[int, int]:
    """uid and gid of the account that owns all test mail."""
    candidates = [name] if name else ["mail", "nobody"]
    for cand in candidates:
        try:
            pw = pwd.getpwnam(cand)
        except KeyError:
            continue
        if pw.pw_uid == 0:
            raise DovecotError("Dovecot refuses mail access as root; pick another mail_user")
        return pw.pw_uid, pw.pw_gid
    raise DovecotError(f"no mail account found (tried {candidates})")


def _maildir_vsize(raw: bytes) -> int:
    """RFC822.SIZE as Dovecot computes it: every LF not preceded by CR
    counts as CRLF."""
    bare_lf = raw.count(b"\n") - raw.count(b"\r\n")
    return len(raw) + bare_lf


_FLAG_LETTERS = set("DFPRST")
_UID_RE = re.compile(rb"\bUID (\d+)")
_FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """A running Dovecot instance on 127.0.0.1 (see module docstring)."""

    host = HOST

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        master_user: str | None = "master",
        master_password: str = "master-secret",
        extra_conf: str = "",
        start: bool = True,
        start_timeout: float = 15.0,
        keep_dir: bool | None = None,
        dovecot_binary: str = "dovecot",
        mail_user: str | None = None,
        auth_penalty: bool = False,
        parent_dir: str | None = None,
        pop3_uidl_format: str = "%08Xu%08Xv",
    ) -> None:
        if os.geteuid() != 0:
            raise DovecotError("the Dovecot test instance must be started as root")
        self.users: dict[str, str] = dict(users or {})
        self.master_user = master_user
        self.master_password = master_password
        self.extra_conf = extra_conf
        self.pop3_uidl_format = pop3_uidl_format
        self.auth_penalty = auth_penalty
        self.start_timeout = start_timeout
        if keep_dir is None:
            keep_dir = os.environ.get("POPGATE_E2E_KEEP", "") not in ("", "0")
        self.keep_dir = keep_dir
        self.dovecot_binary = dovecot_binary
        self.mail_uid, self.mail_gid = _mail_account(mail_user)

        self.dir = tempfile.mkdtemp(prefix="pgdv-", dir=parent_dir or _parent_dir())
        # Login processes (dovenull) and auth (dovecot) must reach base_dir
        # and the passwd-files.
        os.chmod(self.dir, 0o755)
        self.base_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.mail_root = os.path.join(self.dir, "mail")
        self.home_root = os.path.join(self.dir, "home")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        # One passwd-file per user (passwd.d/u-<name>): a new user's file has
        # never been read, so it is visible at once; only a changed
        # password waits for Dovecot's once-per-second re-check.  The "u-"
        # prefix keeps names like ".." from becoming directories.
        self.passwd_dir = os.path.join(self.dir, "passwd.d")
        self.master_passwd_path = os.path.join(self.dir, "master-users")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.stdio_path = os.path.join(self.dir, "stdio.log")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.passwd_dir, exist_ok=True)
        os.chmod(self.passwd_dir, 0o755)
        for d in (self.mail_root, self.home_root):
            self._mkdir_owned(d)
        if len(self.base_dir.encode()) + 40 > 107:
            raise DovecotError(f"base_dir too long for unix sockets: {self.base_dir}")

        self.imap_port = 0
        self.pop3_port = 0
        self.proc: subprocess.Popen | None = None
        self._stdio = None
        self._lock = threading.Lock()
        # Maildir file names: strictly increasing (secs, usecs) so that
        # Dovecot assigns UIDs in delivery order.  One second apart, starting
        # about 11 days ago: realistic, and varied enough for Dovecot's
        # file name hash (names differing only in a counter followed by a
        # constant host part make its first sync of a big Maildir quadratic:
        # 100,000 messages took over 4 minutes instead of 4 seconds).
        self._deliv_secs = int(time.time()) - 1_000_000
        self._deliv_seq = itertools.count()

        for name, password in self.users.items():
            self._check_name(name)
            self._check_password(password)
        for name, password in self.users.items():
            self._write_user(name, password)
        self._write_master_passwd()
        if start:
            self.start()

    # ------------------------------------------------------------------ users

    @staticmethod
    def _check_name(name: str) -> None:
        if (not name or name.startswith("#")
                or any(c in ":/*" or c.isspace() or ord(c) < 0x20 for c in name)):
            raise ValueError(f"unsupported user name {name!r}")

    @staticmethod
    def _check_password(password: str) -> None:
        if ":" in password or any(ord(c) < 0x20 for c in password):
            raise ValueError(
                "test passwords cannot contain ':' (passwd-file separator) "
                "or control characters (Dovecot refuses them)")

    def _mkdir_owned(self, path: str) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
        os.chown(path, self.mail_uid, self.mail_gid)

    @staticmethod
    def _write_atomic(path: str, text: str) -> None:
        try:
            old_mtime = int(os.stat(path).st_mtime)
        except FileNotFoundError:
            old_mtime = 0
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        # passwd-file is re-read when its mtime or size changes; make sure the
        # mtime differs from the previous version even within one second.
        mtime = max(int(time.time()), old_mtime + 1)
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)

    def _user_file(self, name: str) -> str:
        return os.path.join(self.passwd_dir, "u-" + name)

    def _write_user(self, name: str, password: str) -> None:
        home = os.path.join(self.home_root, name)
        self._mkdir_owned(home)
        # uid/gid stay empty: passwd-file rejects UID 0; mail_uid and
        # mail_gid in the config apply instead.
        self._write_atomic(self._user_file(name),
                           f"{name}:{{PLAIN}}{password}:::{home}::\n")

    def _write_master_passwd(self) -> None:
        text = ""
        if self.master_user:
            self._check_name(self.master_user)
            self._check_password(self.master_password)
            text = f"{self.master_user}:{{PLAIN}}{self.master_password}\n"
        self._write_atomic(self.master_passwd_path, text)

    def add_user(self, name: str, password: str) -> None:
        """Add a user, or change a password.  Takes effect for the next login.

        A new user is visible at once.  Dovecot re-checks a passwd-file it
        has read at most once per wall-clock second, so changing an existing
        user's password waits until the next second has begun (0.5 s on
        average) while Dovecot runs."""
        self.add_users({name: password})

    def add_users(self, users: Mapping[str, str]) -> None:
        """add_user() for several users, with at most one wait."""
        for name, password in users.items():
            self._check_name(name)
            self._check_password(password)
        changed = any(n in self.users and self.users[n] != p for n, p in users.items())
        before = time.time()
        for name, password in users.items():
            self._write_user(name, password)
        self.users.update(users)
        if changed:
            self._wait_for_resync(before)

    def remove_user(self, name: str) -> None:
        """Delete a user's passwd entry (the Maildir stays).  Logins fail
        from the next wall-clock second on; this waits for it."""
        before = time.time()
        try:
            os.unlink(self._user_file(name))
        except FileNotFoundError:
            pass
        self.users.pop(name, None)
        self._wait_for_resync(before)

    def _wait_for_resync(self, written_at: float) -> None:
        if self.proc is not None:
            time.sleep(max(0.0, int(written_at) + 1.02 - time.time()))

    # -------------------------------------------------------------- lifecycle

    def _config(self) -> str:
        d = self.dir
        # Anvil's auth penalty delays every login from an IP after a failure
        # (2, 4, 8, 15 s).  Tests share 127.0.0.1, so it is off unless asked
        # for: the auth process cannot reach a socket with mode 0.
        penalty = "" if self.auth_penalty else (
            "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n")
        return f"""\
# Throwaway test instance; generated by tests/e2e/dovecot.py
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = {os.path.basename(d)}
protocols = imap pop3
listen = {HOST}
ssl = no
log_path = {self.log_path}
info_log_path =
debug_log_path =
log_timestamp = "%Y-%m-%d %H:%M:%S "
import_environment = TZ
shutdown_clients = yes

# All mail belongs to one unprivileged account (root is refused for mail).
first_valid_uid = {min(self.mail_uid, 500)}
last_valid_uid = 0
first_valid_gid = {min(self.mail_gid, 500)}
last_valid_gid = 0
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
mail_location = maildir:{self.mail_root}/%u
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
# Names exactly as sent: no lower-casing, no character filter.
auth_username_format = %u
auth_username_chars =
# Failed logins still wait for the auth process's 0.5 s failure timer.
auth_failure_delay = 0
auth_verbose = yes
auth_cache_size = 0
# Loopback peers may pass the client's address (IMAP ID x-originating-ip).
login_trusted_networks = 127.0.0.0/8

# Master users first; 'pass = yes' then requires the target user to exist.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.master_passwd_path}
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/u-%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd_dir}/u-%u
}}

default_process_limit = 1000
default_client_limit = 10000
default_vsz_limit = 1G

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = {HOST}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
{penalty}}}

protocol imap {{
  mail_max_userip_connections = 1000
}}
protocol pop3 {{
  mail_max_userip_connections = 1000
  pop3_uidl_format = {self.pop3_uidl_format}
}}

{self.extra_conf}
"""

    def start(self) -> "Dovecot":
        """Start Dovecot; returns when both ports answer with a greeting."""
        if self.proc is not None:
            return self
        last_error: Exception | None = None
        for _attempt in range(3):
            self.imap_port = _free_port()
            self.pop3_port = _free_port()
            while self.pop3_port == self.imap_port:
                self.pop3_port = _free_port()
            with open(self.conf_path, "w", encoding="utf-8") as f:
                f.write(self._config())
            try:
                self._spawn()
                return self
            except DovecotError as e:
                last_error = e
                log = self.log_text() + self._stdio_text()
                self._kill()
                if "Address already in use" not in log:
                    break
        assert last_error is not None
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        raise last_error

    def _spawn(self) -> None:
        # Never pipes: Dovecot hands its stdout/stderr down to its children,
        # and a reader of a pipe would wait forever.
        self._stdio = open(self.stdio_path, "ab")
        preexec = (
            die_with_parent
            if threading.current_thread() is threading.main_thread()
            else _setpgid_preexec
        )
        self.proc = subprocess.Popen(
            [self.dovecot_binary, "-F", "-c", self.conf_path],
            stdin=subprocess.DEVNULL,
            stdout=self._stdio,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            close_fds=True,
            cwd=self.dir,
        )
        _RUNNING.add(self)
        deadline = time.monotonic() + self.start_timeout
        for port, greeting in ((self.imap_port, b"* OK"), (self.pop3_port, b"+OK")):
            self._wait_greeting(port, greeting, deadline)

    def _wait_greeting(self, port: int, greeting: bytes, deadline: float) -> None:
        last = ""
        while True:
            if self.proc is None or self.proc.poll() is not None:
                rc = None if self.proc is None else self.proc.returncode
                raise DovecotError(
                    f"dovecot exited (rc={rc}) during startup\n{self._diag()}"
                )
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    data = b""
                    while b"\n" not in data:
                        chunk = s.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(greeting):
                        return
                    last = f"unexpected greeting {data!r}"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not greet on {HOST}:{port} within "
                    f"{self.start_timeout}s ({last})\n{self._diag()}"
                )
            time.sleep(0.05)

    def _stdio_text(self) -> str:
        try:
            with open(self.stdio_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _diag(self, lines: int = 40) -> str:
        log = self.log_text().splitlines()[-lines:]
        out = self._stdio_text().splitlines()[-lines:]
        return (
            f"--- {self.log_path} (tail) ---\n" + "\n".join(log)
            + "\n--- dovecot stdout/stderr (tail) ---\n" + "\n".join(out)
        )

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left of the process group (children that did not
            # follow the master down).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=10)
        if self._stdio is not None:
            self._stdio.close()
            self._stdio = None
        _RUNNING.discard(self)

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL to its process group) and
        remove the instance directory unless keep_dir is set."""
        with self._lock:
            self._kill()
            if not self.keep_dir and os.path.isdir(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------- mail

    def maildir(self, user: str) -> str:
        """Path of the user's INBOX Maildir (created when missing)."""
        self._check_name(user)
        path = os.path.join(self.mail_root, user)
        if not os.path.isdir(os.path.join(path, "cur")):
            self._mkdir_owned(path)
            for sub in ("tmp", "new", "cur"):
                self._mkdir_owned(os.path.join(path, sub))
        return path

    def _next_name(self) -> str:
        n = next(self._deliv_seq)
        return f"{self._deliv_secs + n}.M{n % 1_000_000}P{os.getpid()}Q{n}.pgtest"

    def _write_one(self, md: str, raw: bytes, flags: str, new: bool) -> str:
        if not isinstance(raw, (bytes, bytearray)):
            raise TypeError("raw message must be bytes")
        letters = "".join(sorted(set(flags)))
        if set(letters) - _FLAG_LETTERS:
            raise ValueError(f"unknown Maildir flag letters in {flags!r}")
        base = f"{self._next_name()},S={len(raw)},W={_maildir_vsize(raw)}"
        tmp = os.path.join(md, "tmp", base)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self.mail_uid, self.mail_gid)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        if new:
            dest = os.path.join(md, "new", base)
        else:
            dest = os.path.join(md, "cur", f"{base}:2,{letters}")
        os.rename(tmp, dest)
        return dest

    def deliver(self, user: str, raw: bytes, flags: str = "") -> None:
        """Put one message into the user's INBOX by writing the Maildir file
        directly.  flags: Maildir letters, e.g. "S" (\\Seen), "T" (\\Deleted),
        "F" (\\Flagged), "R" (\\Answered), "D" (\\Draft).  Without flags the
        file goes to new/ (\\Recent for the next session), else to cur/."""
        self._write_one(self.maildir(user), bytes(raw), flags, new=not flags)

    def deliver_many(self, user: str, messages: Iterable[bytes], flags: str = "",
                     *, new: bool = False) -> int:
        """Deliver many messages quickly, straight into cur/ (new=True: new/).
        100,000 small messages take 3-6 s on tmpfs (15-25 s on an ext4
        disk), and Dovecot's first SELECT of them about 0.3 s.
        UIDs are assigned in iteration order.  Returns the count."""
        md = self.maildir(user)
        n = 0
        for raw in messages:
            self._write_one(md, raw, flags, new)
            n += 1
        return n

    # ------------------------------------------------------------------- IMAP

    def imap(self, user: str, password: str | None = None, *,
             select: bool = True, timeout: float = 30.0) -> imaplib.IMAP4:
        """A logged-in IMAP connection with INBOX selected (read-write).

        Uses the stored password unless one is given.  Non-ASCII passwords
        go through AUTHENTICATE PLAIN because imaplib sends LOGIN arguments
        as ASCII."""
        if password is None:
            if user not in self.users:
                raise DovecotError(f"unknown user {user!r}: add_user() it first")
            password = self.users[user]
        conn = imaplib.IMAP4(HOST, self.imap_port, timeout=timeout)
        try:
            self._login(conn, user, password)
            if select:
                typ, data = conn.select("INBOX")
                if typ != "OK":
                    raise DovecotError(f"SELECT INBOX failed: {data!r}")
        except BaseException:
            try:
                conn.shutdown()
            except Exception:
                pass
            raise
        return conn

    @staticmethod
    def _login(conn: imaplib.IMAP4, user: str, password: str) -> None:
        if password.isascii() and password.isprintable():
            conn.login(user, password)
        else:
            payload = b"\0" + user.encode() + b"\0" + password.encode("utf-8")
            conn.authenticate("PLAIN", lambda _challenge: payload)

    def imap_master(self, user: str, *, authzid: bool = False,
                    select: bool = True) -> imaplib.IMAP4:
        """Log in as ``user`` through the master user: ``LOGIN user*master``
        or, with authzid=True, AUTHENTICATE PLAIN with authzid=user."""
        if not self.master_user:
            raise DovecotError("no master user configured")
        conn = imaplib.IMAP4(HOST, self.imap_port, timeout=30)
        try:
            if authzid:
                payload = (user.encode() + b"\0" + self.master_user.encode()
                           + b"\0" + self.master_password.encode())
                conn.authenticate("PLAIN", lambda _c: payload)
            else:
                conn.login(f"{user}*{self.master_user}", self.master_password)
            if select:
                conn.select("INBOX")
        except BaseException:
            try:
                conn.shutdown()
            except Exception:
                pass
            raise
        return conn

    def _session(self, user: str, readonly: bool = True) -> "_Session":
        conn = self.imap(user, select=False)
        try:
            typ, data = conn.select("INBOX", readonly=readonly)
            _ok(typ, data, "SELECT/EXAMINE INBOX")
        except BaseException:
            conn.shutdown()
            raise
        return _Session(conn)

    # The read-only helpers below use EXAMINE: they leave \Recent alone.

    def uids(self, user: str) -> list[int]:
        """All UIDs in INBOX, ascending (\\Deleted ones included)."""
        with self._session(user) as c:
            typ, data = c.uid("SEARCH", "ALL")
            _ok(typ, data, "UID SEARCH")
            return sorted(int(x) for x in b" ".join(d for d in data if d).split())

    def uid_validity(self, user: str) -> int:
        with self._session(user) as c:
            typ, data = c.status("INBOX", "(UIDVALIDITY)")
            _ok(typ, data, "STATUS")
            m = re.search(rb"UIDVALIDITY (\d+)", data[0])
            assert m is not None
            return int(m.group(1))

    def bump_uid_validity(self, user: str, by: int = 1000) -> int:
        """Raises INBOX's UIDVALIDITY by `by` with `doveadm mailbox update`,
        UIDs unchanged; returns the new value."""
        before = self.uid_validity(user)
        subprocess.run(["doveadm", "-c", self.conf_path, "mailbox", "update", "-u", user,
                        "--uid-validity", str(before + by), "INBOX"],
                       check=True, capture_output=True, timeout=30)
        assert self.uid_validity(user) == before + by
        return before + by

    def bodies(self, user: str) -> dict[int, bytes]:
        """UID -> exact BODY[] octets (fetched with BODY.PEEK[])."""
        with self._session(user) as c:
            typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            _ok(typ, data, "UID FETCH BODY.PEEK[]")
            out: dict[int, bytes] = {}
            items = list(data)
            for i, item in enumerate(items):
                if not isinstance(item, tuple):
                    continue
                head, body = item
                m = _UID_RE.search(head)
                if m is None and i + 1 < len(items) and isinstance(items[i + 1], bytes):
                    m = _UID_RE.search(items[i + 1])
                if m is None:
                    raise DovecotError(f"no UID in FETCH response {head!r}")
                out[int(m.group(1))] = body
            return out

    def sizes(self, user: str) -> dict[int, int]:
        """UID -> RFC822.SIZE."""
        with self._session(user) as c:
            typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
            _ok(typ, data, "UID FETCH RFC822.SIZE")
            out = {}
            for line in data:
                if isinstance(line, tuple):
                    line = line[0]
                if not line:
                    continue
                u = _UID_RE.search(line)
                s = re.search(rb"RFC822\.SIZE (\d+)", line)
                if u and s:
                    out[int(u.group(1))] = int(s.group(1))
            return out

    def flags(self, user: str) -> dict[int, set[str]]:
        """UID -> set of flags, e.g. {"\\Seen", "\\Deleted"}; the session
        flag \\Recent is left out."""
        with self._session(user) as c:
            typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
            _ok(typ, data, "UID FETCH FLAGS")
            out: dict[int, set[str]] = {}
            for line in data:
                if isinstance(line, tuple):
                    line = line[0]
                if not line:
                    continue
                u = _UID_RE.search(line)
                f = _FLAGS_RE.search(line)
                if u and f:
                    out[int(u.group(1))] = set(f.group(1).decode().split()) - {"\\Recent"}
            return out

    def set_flags(self, user: str, uid: int, flags: Iterable[str] | str,
                  op: str = "+") -> None:
        """Change flags of one message as another client would.
        op: "+" adds (default), "-" removes, "" replaces."""
        if op not in ("+", "-", ""):
            raise ValueError("op must be '+', '-' or ''")
        if isinstance(flags, str):
            flags = flags.split()
        with self._session(user, readonly=False) as c:
            typ, data = c.uid("STORE", str(uid), f"{op}FLAGS.SILENT",
                              "(" + " ".join(flags) + ")")
            _ok(typ, data, "UID STORE")

    def expunge_uid(self, user: str, uid: int) -> None:
        """Remove one message as another client would (\\Deleted + UID EXPUNGE)."""
        with self._session(user, readonly=False) as c:
            typ, data = c.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
            _ok(typ, data, "UID STORE")
            typ, data = c.uid("EXPUNGE", str(uid))
            _ok(typ, data, "UID EXPUNGE")

    def append(self, user: str, raw: bytes, flags: str = "") -> None:
        """Deliver through IMAP APPEND (slow; for mail arriving while a
        session is open, when a direct file write would not be realistic)."""
        with self._session(user, readonly=False) as c:
            typ, data = c.append("INBOX", f"({flags})" if flags else None, None, raw)
            _ok(typ, data, "APPEND")

    def __repr__(self) -> str:
        return (f"<Dovecot {self.dir} imap={self.host}:{self.imap_port} "
                f"pop3={self.host}:{self.pop3_port} running={self.running()}>")


class _Session:
    def __init__(self, conn: imaplib.IMAP4) -> None:
        self.conn = conn

    def __enter__(self) -> imaplib.IMAP4:
        return self.conn

    def __exit__(self, *exc) -> None:
        try:
            self.conn.logout()
        except Exception:
            try:
                self.conn.shutdown()
            except Exception:
                pass


def _ok(typ: str, data, what: str) -> None:
    if typ != "OK":
        raise DovecotError(f"{what} failed: {typ} {data!r}")


__all__ = ["Dovecot", "DovecotError", "HOST", "free_port", "tls_conf"]
