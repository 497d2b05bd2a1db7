"""Several folders as one maildrop (`mailbox: [INBOX, Newsletters]`): the
messages of the first folder, then of the second, each in UID order; UIDLs
unique and stable (the second folder's carry a suffix, the first's are the
single-folder ones) through the UIDL memory, across a UIDVALIDITY reset of
one folder; RETR, TOP and DELE act on the right folder; a missing folder is
left out with a warning."""

from __future__ import annotations

import re
import subprocess

import pytest

import folders
from clients import download, normalise
from corpus import simple_message, tricky_messages
from popgate import Popgate

FOLDERS = "mailbox: [INBOX, Newsletters]\n"


def _state(tmp_path) -> str:
    return f"state:\n  path: {tmp_path / 'state'}\n"


def _setup(dv, user) -> list[bytes]:
    """Three messages in INBOX, two in Newsletters; their BODY[] in
    maildrop order."""
    for raw in tricky_messages()[:3]:
        user.deliver(raw)
    folders.create(dv, user.name, "Newsletters")
    for i in (1, 2):
        folders.append(dv, user.name, "Newsletters", simple_message(100 + i))
    return _expected(dv, user)


def _expected(dv, user) -> list[bytes]:
    out = []
    for folder in ("INBOX", "Newsletters"):
        st = folders.contents(dv, user.name, folder)
        out += [st[uid][1] for uid in sorted(st) if "\\Deleted" not in st[uid][0]]
    return out


def _uidls(port, user) -> list[bytes]:
    with user.pop3(port) as c:
        text = c.answer("UIDL")
        assert c.answer("QUIT").startswith(b"+OK")
    return re.findall(rb"^\d+ (\S+)\r$", text, re.M)


def _bump(dv, user, folder: str) -> None:
    c = dv.imap(user.name, select=False)
    try:
        _, data = c.status(folder, "(UIDVALIDITY)")
        before = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
    finally:
        c.logout()
    subprocess.run(["doveadm", "-c", dv.conf_path, "mailbox", "update", "-u", user.name,
                    "--uid-validity", str(before + 1000), folder],
                   check=True, capture_output=True, timeout=30)


@pytest.mark.parametrize("client", ["fetchmail", "mpop", "poplib"])
def test_keep_mode_across_a_uidvalidity_reset(dovecot, user, client, tmp_path):
    want = _setup(dovecot, user)
    with Popgate(dovecot.imap_port, extra=FOLDERS + _state(tmp_path)) as pg:
        got = download(client, "127.0.0.1", pg.port, user.name, user.password, keep=True, workdir=tmp_path / "c")
        assert got == [normalise(client, b) for b in want]
        uidls = _uidls(pg.port, user)
        assert len(set(uidls)) == 5
        # The first folder's UIDLs are the single-folder ones (Dovecot's).
        assert uidls[:3] == _uidls(dovecot.pop3_port, user)
        assert download(client, "127.0.0.1", pg.port, user.name, user.password, keep=True, workdir=tmp_path / "c") == []
        _bump(dovecot, user, "Newsletters")
        assert _uidls(pg.port, user) == uidls
        assert download(client, "127.0.0.1", pg.port, user.name, user.password, keep=True, workdir=tmp_path / "c") == []
        folders.append(dovecot, user.name, "Newsletters", simple_message(200))
        got = download(client, "127.0.0.1", pg.port, user.name, user.password, keep=True, workdir=tmp_path / "c")
        assert got == [normalise(client, _expected(dovecot, user)[-1])]
    assert _expected(dovecot, user)[:5] == want


@pytest.mark.parametrize("client", ["fetchmail", "mpop", "poplib"])
def test_delete_mode_empties_both_folders(dovecot, user, client, tmp_path):
    want = _setup(dovecot, user)
    with Popgate(dovecot.imap_port, extra=FOLDERS + _state(tmp_path)) as pg:
        got = download(client, "127.0.0.1", pg.port, user.name, user.password, keep=False, workdir=tmp_path / "c")
        assert got == [normalise(client, b) for b in want]
    assert folders.contents(dovecot, user.name, "INBOX") == {}
    assert folders.contents(dovecot, user.name, "Newsletters") == {}


def test_commands_act_on_the_right_folder(dovecot, user, tmp_path):
    want = _setup(dovecot, user)
    inbox = folders.contents(dovecot, user.name, "INBOX")
    news = folders.contents(dovecot, user.name, "Newsletters")
    with Popgate(dovecot.imap_port, extra=FOLDERS) as pg, user.pop3(pg.port) as c:
        assert c.answer("STAT") == b"+OK 5 %d\r\n" % sum(len(b) for b in want)
        retr = c.answer("RETR 5")
        assert retr.startswith(b"+OK") and want[4].split(b"\r\n")[0] in retr
        top = c.answer("TOP 1 0")
        assert top.startswith(b"+OK") and want[0].split(b"\r\n")[0] in top
        assert c.answer("DELE 4").startswith(b"+OK")
        assert c.answer("DELE 2").startswith(b"+OK")
        assert c.answer("QUIT") == b"+OK Logging out, messages deleted.\r\n"
    assert sorted(folders.contents(dovecot, user.name, "INBOX")) == [u for i, u in enumerate(sorted(inbox)) if i != 1]
    left = folders.contents(dovecot, user.name, "Newsletters")
    assert sorted(left) == [sorted(news)[1]]
    assert "\\Seen" in left[sorted(news)[1]][0]


def test_a_missing_folder_is_left_out_with_a_warning(dovecot, user):
    user.deliver(simple_message(1))
    with Popgate(dovecot.imap_port, extra="mailbox: [INBOX, Nowhere]\n") as pg, user.pop3(pg.port) as c:
        assert c.answer("STAT").startswith(b"+OK 1 ")
        assert c.answer("QUIT").startswith(b"+OK")
        assert "folder missing upstream; left out of the maildrop" in pg.log_text()
        assert "Nowhere" in pg.log_text()
