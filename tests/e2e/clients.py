"""Drive real POP3 clients against a POP3 server and collect what they saved.

``download(client, host, port, user, password, keep=..., workdir=...)`` runs
one of ``CLIENTS`` once against a POP3 server (plaintext by default, or over
TLS with ``tls=``, see "TLS" below; USER/PASS or, for curl, the SASL
mechanism it picks) and returns the messages the client
delivered, as raw bytes, in download order.  ``normalise(client, body)`` turns
the IMAP ``BODY[]`` of a message into exactly the bytes that client must have
written, so an end-to-end test asserts ``downloaded == normalise(client, body)``.

Modes
-----
keep=True   "leave mail on the server": the client's own UIDL bookkeeping
            lives in ``workdir`` (fetchmail ``fetchids``, getmail
            ``oldmail-<host>-<port>-<user>``, mpop ``mpop_uidls``, and for
            curl and poplib a ``<client>_uidls`` file written by this module),
            so a second call with the same workdir downloads only messages
            whose UIDL it has not seen.  getmail keys its state by port too:
            a server restarted on another port looks like a new account to it.
keep=False  download every message on the server, delete each one, QUIT.

Each call writes fresh configuration files into ``workdir`` (the POP3 port may
change between calls) and delivers into a fresh ``<client>-out-<n>``
directory; the state files persist.  Clients run with HOME=workdir and a
minimal environment, stdout/stderr go to files in workdir (never pipes), and
the whole process group is killed when ``timeout`` expires.  Any failure
raises ``ClientError`` carrying the tail of the client's output.

Per-client configuration and what remains to normalise
------------------------------------------------------
The POP3 wire form of a message is its ``BODY[]`` with CRLF line ends
(a bare LF becomes CRLF) and a final CRLF added when the message lacks one
(RFC 1939 multi-line responses end with CRLF "." CRLF).  ``wire_form()``
computes it.

fetchmail   rc file (mode 0600)::

                set no bouncemail / set no syslog / set invisible
                set idfile "<workdir>/fetchids"
                poll "<host>" service <port> protocol pop3 uidl
                     auth password timeout <t> no envelope
                  user "<user>" there with password "<password>"
                  mda "exec \\x22$POPCLIENT_MDA\\x22"
                  sslproto "" keep|no keep fetchall
                  no rewrite no stripcr no forcecr no mimedecode
                  no dropstatus no dropdelivered

            ``sslproto ""`` is required: fetchmail >= 6.4 otherwise insists on
            STLS.  ``invisible`` suppresses its Received header, ``no stripcr``
            keeps the CRs, the MDA writes stdin to one file per message.
            Output == wire form: byte-identical apart from the final CRLF
            the protocol adds to a message without one.  In keep mode it
            downloads with ``TOP n 99999999`` instead of RETR.

getmail     getmail6 rc (``--getmaildir workdir``): SimplePOP3Retriever,
            destination MDA_external running the same one-file-per-message
            script (``unixfrom = false``, ``allow_root_commands = true`` when
            running as root), options ``delivered_to = false``,
            ``received = false``, ``read_all = false`` (keep) / ``true``
            (delete), ``delete = false|true``.  getmail cannot hand over the
            message unchanged: it splits the RETR answer into lines with
            poplib, joins them with LF, parses them with Python's email
            package and regenerates the message (compat32 policy: headers
            longer than 78 characters are refolded, "Name:value" becomes
            "Name: value", ...), deletes any Return-Path header and puts
            ``Return-Path: <sender>`` first (sender = old Return-Path, else
            Sender, else "unknown").  ``normalise`` reproduces this by running
            getmail's own ``getmailcore.message.Message`` on the poplib lines
            of the wire form, in getmail's own interpreter.

mpop        config (``-C``, mode 0600)::

                defaults / timeout <t>
                account default
                host "<host>" / port <port> / tls off / auth user
                user "<user>" / password "<password>"
                keep on|off / only_new on|off / received_header off
                delivery exchange "<outdir>"
                uidls_file "<workdir>/mpop_uidls"

            ``delivery exchange`` (an Exchange pickup directory, one .eml per
            message) keeps the CRLF line ends; ``mda`` and ``maildir``
            delivery would convert them to LF and ``mbox`` would add From_
            lines and >From quoting.  Output == wire form.  ``only_new off``
            in delete mode makes mpop download everything it deletes (with
            ``keep off`` mpop deletes all messages whose UIDL it knows, even
            ones it did not download in this session).

curl        ``curl -q -K <config>``; the config holds ``user = "<user>:<pw>"``
            so the password never appears in argv.  Delete mode: one process
            ``LIST``s (``pop3://host:port/``), a second one RETRs and DELEs
            each message over ONE connection (``next`` blocks share curl's
            connection cache: RETR 1, DELE 1, RETR 2, DELE 2, ..., QUIT); DELE
            is ``request = "DELE"`` plus ``head`` (without -I curl would wait
            for a multi-line answer).  Keep mode: ``UIDL`` in a first
            session, then RETR of the unseen numbers in a second one (curl
            cannot decide between commands of one session, so the numbers
            must still be valid then).  curl authenticates with SASL when the
            server's CAPA offers a mechanism it supports (against Dovecot:
            ``AUTH PLAIN`` with a "+ " continuation), USER/PASS otherwise.
            Output == wire form (curl writes the un-dot-stuffed octets).

poplib      Python's poplib with its 2048-byte line limit lifted: keep mode
            UIDL + RETR of unseen UIDLs, delete mode LIST + RETR/DELE each +
            QUIT.  A message is its lines joined with CRLF plus a final CRLF.
            Output == wire form (except that poplib drops a bare CR that
            starts a line ending in bare LF, which ``normalise`` replays).

Commands observed on the wire (these configurations, Dovecot 2.3.19 POP3)
------------------------------------------------------------------------
fetchmail keep    USER PASS STAT UIDL, per new message LIST n + TOP n 99999999, QUIT
fetchmail delete  USER PASS STAT UIDL, per message LIST n + RETR n + DELE n, QUIT
getmail           USER PASS UIDL LIST UIDL LIST, RETR n (+ DELE n) each, QUIT
mpop              CAPA USER PASS STAT LIST UIDL, RETRs (pipelined when CAPA
                  says PIPELINING), then all DELEs, QUIT
curl              CAPA, AUTH PLAIN / "+ " / base64; one session LIST or UIDL,
                  QUIT; a second session RETR n (+ DELE n) each, QUIT
poplib            USER PASS, UIDL or LIST, RETR n (+ DELE n) each, QUIT
fetchmail sends no CAPA with ``auth password`` and ``sslproto ""``; without
``sslproto ""`` it sends CAPA then STLS even when STLS is not advertised.

Source address
--------------
``download(..., source="127.0.0.2")`` connects from that local address
(fetchmail, mpop and poplib; ``SOURCE_CLIENTS``): mpop with ``source_ip``,
poplib with a bound socket, and fetchmail, which cannot bind, through a
small relay run as its ``plugin`` (fetchmail talks to the relay's stdin and
stdout; the relay connects from the address).

TLS
---
``download(..., tls="implicit" | "starttls", cafile=path)`` runs the same
session over POP3S or STLS.  Certificate verification is never turned off:
the server's certificate must chain to ``cafile`` (the system's trust store
when cafile is None) and match ``host``.  STLS is mandatory when asked for:
a server that does not offer it fails the download instead of falling back
to plaintext.

fetchmail   implicit: ``ssl sslproto "tls1.2+" sslcertck sslcertfile "<ca>"``;
            STLS: the same without ``ssl`` (in fetchmail 6.4 a TLS sslproto
            without ``ssl`` makes STLS mandatory; it sends CAPA, then STLS).
            fetchmail matches only DNS names of the certificate, not IP
            addresses: connect to a name (e.g. "localhost").
getmail     implicit only: SimplePOP3SSLRetriever with ``ca_certs = <ca>``
            (getmail then requires a verified chain and matches the host
            name itself; without ca_certs it would accept any certificate,
            so the system bundle is passed when cafile is None).  getmail
            has no STLS for POP3: tls="starttls" raises ValueError.
mpop        ``tls on``, ``tls_starttls on|off``, ``tls_trust_file <ca>`` (or
            ``system``), ``tls_certcheck on``.
curl        ``pop3s://`` for implicit TLS, ``pop3://`` plus ``ssl-reqd`` for
            STLS; ``cacert = <ca>``.
poplib      ``POP3_SSL(context=ssl.create_default_context(cafile=ca))`` or
            ``POP3.stls(context=...)`` right after the greeting (poplib
            sends CAPA first and refuses when STLS is not listed).
``TLS_CLIENTS`` lists the clients that support each mode.

Passwords
---------
Every client is given the password through its own config syntax, quoted:
fetchmail as a quoted string with every byte outside printable ASCII, '"'
and '\\' written as \\xhh; getmail as a raw ConfigParser value; mpop inside
double quotes (mpop strips only the outer pair and knows no escapes, so inner
quotes and backslashes are literal); curl as a config-file string with \\\\
and \\" escapes.  Spaces, quotes, backslashes, braces, '%', '#' and UTF-8
work everywhere.  Limits: no client takes CR, LF or NUL; getmail strips
leading and trailing whitespace (ConfigParser), so such passwords raise
ValueError for getmail; curl splits "user:password" at the first ':', so a
user name must not contain ':' for curl.
"""

from __future__ import annotations

import functools
import os
import pathlib
import poplib
import re
import shutil
import signal
import subprocess
import time

CLIENTS = ["fetchmail", "getmail", "mpop", "curl", "poplib"]

# download(tls=...): plaintext, POP3S, STLS.
TLS_MODES = (None, "implicit", "starttls")

# Clients that can connect from a given local address (download(source=)).
SOURCE_CLIENTS = ["fetchmail", "mpop", "poplib"]

# Clients that can run each TLS mode (getmail has no STLS for POP3).
TLS_CLIENTS = {
    "implicit": ["fetchmail", "getmail", "mpop", "curl", "poplib"],
    "starttls": ["fetchmail", "mpop", "curl", "poplib"],
}

__all__ = ["CLIENTS", "ClientError", "SOURCE_CLIENTS", "assert_fails", "TLS_CLIENTS", "TLS_MODES", "download",
           "normalise", "wire_form"]


class ClientError(RuntimeError):
    """A POP3 client failed, timed out or produced no usable output.

    ``kind`` says how, so that a test can tell the failure it expects from
    any other: "timeout" (the client or the harness gave up waiting),
    "failed" (the client reported an error: the text holds its output) or
    "missing" (the client is not installed)."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind


def assert_fails(client: str, kind: str | tuple[str, ...], pattern: str | None, fn) -> None:
    """`fn` raises the ClientError of `kind` (or one of the kinds) whose
    text matches `pattern`."""
    try:
        fn()
    except ClientError as e:
        exc = e
    else:
        raise AssertionError(f"{client} did not fail")
    kinds = (kind,) if isinstance(kind, str) else kind
    assert exc.kind in kinds, f"{client}: expected {kind}, got {exc.kind}: {exc}"
    if pattern:
        assert re.search(pattern, str(exc)), f"{client}: unexpected failure: {exc}"


# ---------------------------------------------------------------- helpers

_TAIL = 4000


def _tail(data: bytes | str, limit: int = _TAIL) -> str:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    data = data.strip()
    return data if len(data) <= limit else "..." + data[-limit:]


def _next_outdir(workdir: pathlib.Path, client: str) -> pathlib.Path:
    n = 1
    while (workdir / f"{client}-out-{n}").exists():
        n += 1
    out = workdir / f"{client}-out-{n}"
    out.mkdir()
    return out


def _env(workdir: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(workdir),
        "XDG_CONFIG_HOME": str(workdir),
    }
    env.update(extra)
    return env


def _run(client: str, argv: list[str], *, workdir: pathlib.Path,
         env: dict[str, str], timeout: float, ok: tuple[int, ...] = (0,),
         tag: str = "") -> int:
    """Run argv with output to files; kill its process group on timeout."""
    name = f"{client}{('-' + tag) if tag else ''}"
    out_path = workdir / f"{name}.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise ClientError(
                f"{client} timed out after {timeout}s: {' '.join(argv)}\n"
                f"{_tail(out_path.read_bytes())}", "timeout") from None
    if rc not in ok:
        raise ClientError(
            f"{client} exited with status {rc}: {' '.join(argv)}\n"
            f"{_tail(out_path.read_bytes())}")
    return rc


def _read_numbered(outdir: pathlib.Path) -> list[bytes]:
    files = sorted(p for p in outdir.iterdir() if p.name.isdigit())
    return [p.read_bytes() for p in files]


def _system_cafile() -> str:
    """The system's CA bundle, for clients that verify only with a file."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return path
    raise ValueError("no system CA bundle found; pass cafile")


def _check_password(password: str) -> None:
    if any(c in password for c in "\r\n\0"):
        raise ValueError("POP3 passwords cannot contain CR, LF or NUL")


# One file per message, numbered in delivery order, written atomically.
_MDA_SCRIPT = """#!/bin/sh
set -e
d="$POPCLIENT_OUT"
n=$(ls -1 "$d" | wc -l)
f=$(printf '%s/%06d' "$d" "$n")
cat > "$f.part"
mv "$f.part" "$f"
"""


def _write_mda(workdir: pathlib.Path) -> pathlib.Path:
    path = workdir / "deliver.sh"
    path.write_text(_MDA_SCRIPT)
    path.chmod(0o755)
    return path


def _load_uidls(path: pathlib.Path) -> set[str]:
    if not path.exists():
        return set()
    return {line for line in path.read_text("ascii").splitlines() if line}


def _save_uidls(path: pathlib.Path, uidls: set[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(u + "\n" for u in sorted(uidls)), "ascii")
    os.replace(tmp, path)


# -------------------------------------------------------------- fetchmail

def _fetchmail_quote(s: str) -> str:
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if 0x20 <= b < 0x7F and c not in '"\\':
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return '"' + "".join(out) + '"'


# fetchmail cannot bind its connection to an address itself; with a
# source address it connects through this relay (its `plugin` option).
_RELAY_SCRIPT = """import os, socket, sys, threading
source, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=60, source_address=(source, 0))
s.settimeout(None)
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
out = sys.stdout.buffer
while True:
    data = s.recv(65536)
    if not data:
        break
    out.write(data)
    out.flush()
"""


def _fetchmail(host, port, user, password, keep, workdir, timeout, *,
               tls=None, cafile=None, source=None):
    outdir = _next_outdir(workdir, "fetchmail")
    mda = _write_mda(workdir)
    q = _fetchmail_quote
    mode = "keep" if keep else "no keep fetchall"
    mda_cmd = q('exec "$POPCLIENT_MDA"')
    if tls is None:
        ssl_opts = 'sslproto ""'
    else:
        # Without "ssl", a TLS sslproto makes STLS mandatory.
        ssl_opts = ("ssl " if tls == "implicit" else "") + 'sslproto "tls1.2+" sslcertck'
        if cafile:
            ssl_opts += f" sslcertfile {q(cafile)}"
    rc_text = (
        "set no bouncemail\n"
        "set no syslog\n"
        "set invisible\n"
        f"set idfile {q(str(workdir / 'fetchids'))}\n"
        f"poll {q(host)} service {int(port)} protocol pop3 uidl auth password"
        f" timeout {max(1, int(timeout))} no envelope\n"
        + (f"  plugin {q(_relay(workdir, source) + ' %h %p')}\n" if source else "")
        + f"  user {q(user)} there with password {q(password)}\n"
        f"  mda {mda_cmd}\n"
        f"  {ssl_opts} {mode} no rewrite no stripcr no forcecr no mimedecode"
        " no dropstatus no dropdelivered\n"
    )
    rc_path = workdir / "fetchmailrc"
    fd = os.open(rc_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(rc_text)
    os.chmod(rc_path, 0o600)
    env = _env(workdir, FETCHMAILHOME=str(workdir), POPCLIENT_MDA=str(mda),
               POPCLIENT_OUT=str(outdir))
    # 0: mail delivered, 1: no mail.
    _run("fetchmail", ["fetchmail", "-f", str(rc_path), "-v", "--nosyslog",
                       "--pidfile", str(workdir / "fetchmail.pid")],
         workdir=workdir, env=env, timeout=timeout, ok=(0, 1))
    return _read_numbered(outdir)


def _relay(workdir: pathlib.Path, source: str) -> str:
    """The relay command line, up to the host and port."""
    import sys

    script = workdir / "relay.py"
    script.write_text(_RELAY_SCRIPT)
    if any(c.isspace() for c in f"{sys.executable}{script}{source}"):
        raise ValueError("the relay's paths and source cannot contain white space")
    return f"{sys.executable} {script} {source}"


# ---------------------------------------------------------------- getmail

def _getmail(host, port, user, password, keep, workdir, timeout, *,
             tls=None, cafile=None):
    if password != password.strip() or not password:
        raise ValueError("getmail cannot take a password that is empty or has "
                         "leading/trailing whitespace (ConfigParser strips it)")
    for name, value in (("host", host), ("user", user)):
        if value != value.strip() or any(c in value for c in "\r\n"):
            raise ValueError(f"getmail cannot take this {name}: {value!r}")
    if tls == "starttls":
        raise ValueError("getmail has no STLS for POP3; use tls='implicit'")
    retriever = "type = SimplePOP3Retriever\n"
    if tls == "implicit":
        # getmail verifies only when ca_certs is set (CERT_REQUIRED plus a
        # host name match); otherwise it would accept any certificate.
        cafile = cafile or _system_cafile()
        if any(c in cafile for c in "\r\n") or cafile != cafile.strip():
            raise ValueError(f"getmail cannot take this ca_certs path: {cafile!r}")
        retriever = f"type = SimplePOP3SSLRetriever\nca_certs = {cafile}\n"
    outdir = _next_outdir(workdir, "getmail")
    mda = _write_mda(workdir)
    root = os.geteuid() == 0 or os.getegid() == 0
    rc_text = (
        "[retriever]\n"
        f"{retriever}"
        f"server = {host}\n"
        f"port = {int(port)}\n"
        f"username = {user}\n"
        f"password = {password}\n"
        f"timeout = {max(1, int(timeout))}\n"
        "\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {mda}\n"
        "unixfrom = false\n"
        f"allow_root_commands = {'true' if root else 'false'}\n"
        "\n"
        "[options]\n"
        "verbose = 1\n"
        f"read_all = {'false' if keep else 'true'}\n"
        f"delete = {'false' if keep else 'true'}\n"
        "delivered_to = false\n"
        "received = false\n"
        "message_log_syslog = false\n"
    )
    rc_path = workdir / "getmailrc"
    fd = os.open(rc_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(rc_text)
    env = _env(workdir, POPCLIENT_OUT=str(outdir))
    _run("getmail", ["getmail", "--getmaildir", str(workdir),
                     "--rcfile", str(rc_path)],
         workdir=workdir, env=env, timeout=timeout)
    return _read_numbered(outdir)


# ------------------------------------------------------------------- mpop

def _mpop_quote(s: str) -> str:
    # mpop strips one pair of enclosing double quotes and has no escapes.
    if any(c in s for c in "\r\n\0"):
        raise ValueError(f"mpop cannot take {s!r} in its configuration")
    return '"' + s + '"'


def _mpop(host, port, user, password, keep, workdir, timeout, *,
          tls=None, cafile=None, source=None):
    outdir = _next_outdir(workdir, "mpop")
    q = _mpop_quote
    if tls is None:
        tls_conf = "tls off\n"
    else:
        tls_conf = (
            "tls on\n"
            f"tls_starttls {'on' if tls == 'starttls' else 'off'}\n"
            f"tls_trust_file {q(cafile) if cafile else 'system'}\n"
            "tls_certcheck on\n"
        )
    conf = (
        "defaults\n"
        f"timeout {max(1, int(timeout))}\n"
        "account default\n"
        f"host {q(host)}\n"
        f"port {int(port)}\n"
        f"{tls_conf}"
        "auth user\n"
        f"user {q(user)}\n"
        f"password {q(password)}\n"
        f"keep {'on' if keep else 'off'}\n"
        f"only_new {'on' if keep else 'off'}\n"
        "received_header off\n"
        f"delivery exchange {q(str(outdir))}\n"
        f"uidls_file {q(str(workdir / 'mpop_uidls'))}\n"
        + (f"source_ip {source}\n" if source else "")
    )
    conf_path = workdir / "mpoprc"
    fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(conf)
    os.chmod(conf_path, 0o600)
    _run("mpop", ["mpop", "-C", str(conf_path), "-q", "default"],
         workdir=workdir, env=_env(workdir), timeout=timeout)

    # mpop-<secs>-M<usecs>P<pid>Q<counter>-<host>.eml; Q counts deliveries.
    def order(p: pathlib.Path):
        m = re.search(r"Q(\d+)", p.name)
        return (int(m.group(1)) if m else 0, p.name)

    files = sorted((p for p in outdir.iterdir() if p.suffix == ".eml"), key=order)
    return [p.read_bytes() for p in files]


# ------------------------------------------------------------------- curl

def _curl_quote(s: str) -> str:
    if "\0" in s:
        raise ValueError("curl cannot take NUL")
    s = (s.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
         .replace("\n", "\\n").replace("\r", "\\r").replace("\v", "\\v"))
    return '"' + s + '"'


def _curl_base(user: str, password: str, timeout: float, tls=None,
               cafile=None) -> str:
    if ":" in user:
        raise ValueError("curl cannot take a user name containing ':'")
    tls_opts = ""
    if tls is not None:
        # ssl-reqd: STLS is mandatory (pop3://); pop3s:// is TLS anyway.
        tls_opts = "ssl-reqd\n"
        if cafile:
            tls_opts += f"cacert = {_curl_quote(cafile)}\n"
    return (tls_opts + f"user = {_curl_quote(user + ':' + password)}\n"
            "silent\n"
            "show-error\n"
            f"connect-timeout = {max(1, int(timeout))}\n"
            f"max-time = {max(1, int(timeout))}\n")


def _curl_run(workdir, tag, text, timeout):
    cfg = workdir / f"curl-{tag}.conf"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    _run("curl", ["curl", "-q", "-K", str(cfg)], workdir=workdir,
         env=_env(workdir), timeout=timeout, tag=tag)


def _curl(host, port, user, password, keep, workdir, timeout, *,
          tls=None, cafile=None):
    outdir = _next_outdir(workdir, "curl")
    hostpart = f"[{host}]" if ":" in host else host
    scheme = "pop3s" if tls == "implicit" else "pop3"
    base_url = f"{scheme}://{hostpart}:{int(port)}/"
    base = _curl_base(user, password, timeout, tls, cafile)
    listing = outdir / "listing"
    first = base + f"url = {_curl_quote(base_url)}\noutput = {_curl_quote(str(listing))}\n"
    if keep:
        first += 'request = "UIDL"\n'
    _curl_run(workdir, "list", first, timeout)
    entries = []
    for line in listing.read_bytes().decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            entries.append((int(parts[0]), parts[1]))
    state = workdir / "curl_uidls"
    seen = _load_uidls(state) if keep else set()
    wanted = [(n, u) for n, u in entries if not keep or u not in seen]
    if not wanted:
        return []
    blocks = []
    for i, (n, _u) in enumerate(wanted):
        url = _curl_quote(f"{base_url}{n}")
        blocks.append(base + f"url = {url}\n"
                      f"output = {_curl_quote(str(outdir / f'{i:06d}'))}\n")
        if not keep:
            blocks.append(base + 'request = "DELE"\nhead\n' + f"url = {url}\n")
    _curl_run(workdir, "retr", "next\n".join(blocks), timeout)
    if keep:
        _save_uidls(state, seen | {u for _n, u in wanted})
    return _read_numbered(outdir)


# ----------------------------------------------------------------- poplib

_POPLIB_MAXLINE = 1 << 24


class _UnlimitedLines:
    """poplib without the 2048-byte line limit."""

    def _getline(self):
        line = self.file.readline(_POPLIB_MAXLINE + 1)
        if len(line) > _POPLIB_MAXLINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets


class _POP3(_UnlimitedLines, poplib.POP3):
    """poplib.POP3 without the 2048-byte line limit."""


class _POP3_SSL(_UnlimitedLines, poplib.POP3_SSL):
    """poplib.POP3_SSL without the 2048-byte line limit."""


def _tls_context(cafile):
    """Verifying client context: CERT_REQUIRED and host name check."""
    import ssl

    return ssl.create_default_context(cafile=cafile)


def _from(cls, source):
    """`cls` connecting from `source` (an address of this machine)."""
    import socket

    class FromSource(cls):
        def _create_socket(self, timeout):
            return socket.create_connection((self.host, self.port), timeout,
                                            source_address=(source, 0))

    return FromSource


def _poplib(host, port, user, password, keep, workdir, timeout, *,
            tls=None, cafile=None, source=None):
    _check_password(password)
    deadline = time.monotonic() + timeout
    state = workdir / "poplib_uidls"
    seen = _load_uidls(state) if keep else set()
    got: list[bytes] = []
    new: set[str] = set()
    log = []

    def step(what, fn, *args):
        if time.monotonic() > deadline:
            raise ClientError(f"poplib timed out after {timeout}s; "
                              f"session so far: {log}", "timeout")
        log.append(what)
        try:
            return fn(*args)
        except (poplib.error_proto, OSError, EOFError) as e:
            kind = "timeout" if isinstance(e, TimeoutError) else "failed"
            raise ClientError(f"poplib {what} failed: {e!r}; session: {log}", kind) from e

    if tls == "implicit":
        conn = step("connect", functools.partial(
            _from(_POP3_SSL, source) if source else _POP3_SSL, host, port, timeout=timeout, context=_tls_context(cafile)))
    else:
        conn = step("connect", _from(_POP3, source) if source else _POP3, host, port, timeout)
    try:
        if tls == "starttls":
            step("STLS", functools.partial(conn.stls, context=_tls_context(cafile)))
        step("USER", conn.user, user)
        step("PASS", conn.pass_, password)
        if keep:
            _resp, lines, _ = step("UIDL", conn.uidl)
            todo = []
            for line in lines:
                num, uidl = line.decode("ascii").split(None, 1)
                if uidl not in seen:
                    todo.append((int(num), uidl))
        else:
            _resp, lines, _ = step("LIST", conn.list)
            todo = [(int(line.split()[0]), "") for line in lines]
        for num, uidl in todo:
            _resp, msg_lines, _ = step(f"RETR {num}", conn.retr, num)
            got.append(b"".join(l + b"\r\n" for l in msg_lines))
            if keep:
                new.add(uidl)
            else:
                step(f"DELE {num}", conn.dele, num)
        resp = step("QUIT", conn.quit)
        if not resp.startswith(b"+OK"):
            raise ClientError(f"poplib QUIT answered {resp!r}")
    finally:
        try:
            conn.close()
        except Exception:
            pass
    if keep:
        _save_uidls(state, seen | new)
    return got


# ------------------------------------------------------------------- API

_DRIVERS = {
    "fetchmail": _fetchmail,
    "getmail": _getmail,
    "mpop": _mpop,
    "curl": _curl,
    "poplib": _poplib,
}


def download(client: str, host: str, port: int, user: str, password: str, *,
             keep: bool, workdir: pathlib.Path, timeout: float = 60,
             tls: str | None = None, cafile: str | None = None,
             source: str | None = None) -> list[bytes]:
    """Run ``client`` once against host:port and return the messages it saved,
    in download order (see the module docstring for each client's setup).

    tls: None (plaintext), "implicit" (POP3S) or "starttls" (STLS, required:
    the client fails rather than continue in plaintext).  The server
    certificate is always verified, against ``cafile`` when given, else the
    system's trust store, and must match ``host``.

    source: the local address to connect from (fetchmail, mpop and poplib
    only), e.g. 127.0.0.2 so that the client differs from a balancer or
    popgate on 127.0.0.1."""
    if client not in _DRIVERS:
        raise ValueError(f"unknown client {client!r}; choose from {CLIENTS}")
    if tls not in TLS_MODES:
        raise ValueError(f"unknown tls mode {tls!r}; choose from {TLS_MODES}")
    if cafile is not None:
        if tls is None:
            raise ValueError("cafile needs tls='implicit' or 'starttls'")
        cafile = os.path.abspath(cafile)
        if not os.path.isfile(cafile):
            raise ValueError(f"cafile {cafile!r} is not a file")
    _check_password(password)
    if client != "poplib" and shutil.which(client) is None:
        raise ClientError(f"{client} is not installed", "missing")
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if source is not None:
        if client not in SOURCE_CLIENTS:
            raise ValueError(f"{client} cannot connect from a given address; "
                             f"choose from {SOURCE_CLIENTS}")
        kwargs["source"] = source
    return _DRIVERS[client](str(host), int(port), user, password, bool(keep),
                            workdir, float(timeout), tls=tls, cafile=cafile, **kwargs)


def wire_form(body: bytes) -> bytes:
    """The message as a POP3 server sends it inside RETR (before dot-stuffing):
    CRLF line ends and a final CRLF."""
    body = re.sub(rb"(?<!\r)\n", b"\r\n", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def _poplib_lines(wire: bytes) -> list[bytes]:
    """The lines poplib returns for this (un-dot-stuffed) RETR body."""
    out = []
    # poplib reads with readline(): lines end at LF only (not at a bare CR).
    for line in re.findall(rb"[^\n]*\n|[^\n]+$", wire):
        if line[-2:] == b"\r\n":
            out.append(line[:-2])
        elif line[:1] == b"\r":
            out.append(line[1:-1])
        elif line.endswith(b"\n"):
            out.append(line[:-1])
        else:
            out.append(line)
    return out


_GETMAIL_FLATTEN = r"""
import sys
from getmailcore.message import Message
data = sys.stdin.buffer.read()
lines = data.split(b"\n")[:-1] if data else []
msg = Message(fromlines=lines + [b""])
sys.stdout.buffer.write(msg.flatten(False, False))
"""


@functools.lru_cache(maxsize=1)
def _getmail_python() -> str:
    """The interpreter getmail runs under (its #! line)."""
    path = shutil.which("getmail")
    if path:
        with open(path, "rb") as f:
            first = f.readline()
        if first.startswith(b"#!"):
            parts = first[2:].decode().split()
            if parts and parts[0].endswith("/env") and len(parts) > 1:
                return shutil.which(parts[1]) or parts[1]
            if parts:
                return parts[0]
    return "python3"


def _getmail_flatten(lines: list[bytes]) -> bytes:
    if any(b"\n" in l for l in lines):
        raise ValueError("poplib lines cannot contain LF")
    data = b"".join(l + b"\n" for l in lines)
    proc = subprocess.run([_getmail_python(), "-c", _GETMAIL_FLATTEN],
                          input=data, capture_output=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"})
    if proc.returncode != 0:
        raise RuntimeError("running getmail's Message.flatten failed: "
                           + _tail(proc.stderr))
    return proc.stdout


def normalise(client: str, expected_imap_body: bytes) -> bytes:
    """What ``client`` must have written for a message whose IMAP BODY[] is
    ``expected_imap_body`` (see the module docstring)."""
    wire = wire_form(expected_imap_body)
    if client in ("fetchmail", "mpop", "curl"):
        return wire
    if client == "poplib":
        return b"".join(l + b"\r\n" for l in _poplib_lines(wire))
    if client == "getmail":
        return _getmail_flatten(_poplib_lines(wire))
    raise ValueError(f"unknown client {client!r}; choose from {CLIENTS}")
