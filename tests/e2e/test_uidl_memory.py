"""The UIDL memory: with `state` on, a mailbox whose UIDVALIDITY changes,
or which is rebuilt so that every UID changes, keeps its UIDLs, so that
real clients in keep mode download nothing twice."""

from __future__ import annotations

import concurrent.futures
import os
import poplib
import random
import threading
import time
import re

import pytest

from clients import CLIENTS, download
from corpus import CLIENT_MESSAGES, simple_message
from polling import wait_for
from popgate import Popgate

HOST = "127.0.0.1"


def _message_id(raw: bytes) -> bytes:
    m = re.search(rb"(?im)^Message-ID:\s*(\S+)", raw)
    assert m, raw[:200]
    return m.group(1)


def _late(i: int) -> bytes:
    return (f"From: Late <late@uidl.test>\nTo: u@uidl.test\nSubject: late {i}\n"
            f"Date: Wed, 02 Dec 2026 05:00:0{i} +0000\nMessage-ID: <late-{i}@uidl.test>\n"
            f"\nnew mail {i}\n").encode()


@pytest.fixture
def gateway(dovecot, tmp_path):
    state = tmp_path / "state"
    with Popgate(dovecot.imap_port, extra=f'state:\n  path: "{state}"\n') as pg:
        yield pg


def _mailbox(user) -> None:
    user.deliver(*CLIENT_MESSAGES)
    # Two identical messages: matched one to one.
    user.deliver(simple_message(7), simple_message(7))


def _rebuild(dovecot, user: str) -> None:
    """Removes the UID list and the indexes and renames the files so that
    Dovecot numbers them afresh, in the reverse order."""
    md = dovecot.maildir(user)
    before = dovecot.uid_validity(user)
    for name in os.listdir(md):
        if name == "dovecot-uidlist" or name.startswith("dovecot.index"):
            os.remove(os.path.join(md, name))
    files = sorted(os.path.join(md, d, f) for d in ("cur", "new") for f in os.listdir(os.path.join(md, d)))
    files.sort(key=lambda p: os.path.basename(p))
    for i, path in enumerate(files):
        head, base = os.path.split(path)
        secs, rest = base.split(".", 1)
        os.rename(path, os.path.join(head, f"{2_000_000_000 - i}.{rest}"))
    assert dovecot.uid_validity(user) != before


def _run(client, gateway, user, tmp_path, keep=True):
    return download(client, HOST, gateway.port, user.name, user.password, keep=keep,
                    workdir=tmp_path / "client", timeout=30)


@pytest.mark.parametrize("client", CLIENTS)
def test_uidvalidity_reset_downloads_nothing_again(client, dovecot, gateway, user, tmp_path):
    _mailbox(user)
    first = _run(client, gateway, user, tmp_path)
    assert len(first) == len(CLIENT_MESSAGES) + 2
    uids = user.uids()

    dovecot.bump_uid_validity(user.name)
    assert user.uids() == uids
    assert _run(client, gateway, user, tmp_path) == []
    wait_for(lambda: "UIDLs re-matched" in gateway.log_text(), what="the re-match is logged")
    line = [x for x in gateway.log_text().splitlines() if "UIDLs re-matched" in x][-1]
    assert f"matched={len(first)}" in line and "unmatched=0" in line, line
    assert user.name in line

    for i in range(3):
        user.deliver(_late(i))
    late = _run(client, gateway, user, tmp_path)
    assert sorted(_message_id(m) for m in late) == [f"<late-{i}@uidl.test>".encode() for i in range(3)]
    assert _run(client, gateway, user, tmp_path) == []


@pytest.mark.parametrize("client", CLIENTS)
def test_rebuilt_mailbox_downloads_nothing_again(client, dovecot, gateway, user, tmp_path):
    _mailbox(user)
    first = _run(client, gateway, user, tmp_path)
    assert len(first) == len(CLIENT_MESSAGES) + 2
    order = [_message_id(b) for _, b in sorted(user.bodies().items())]
    old_uids = user.uids()

    _rebuild(dovecot, user.name)
    new_order = [_message_id(b) for _, b in sorted(user.bodies().items())]
    assert new_order != order
    assert user.uids() != old_uids or new_order != order
    assert _run(client, gateway, user, tmp_path) == []

    user.deliver(_late(1))
    # Delete mode: everything is downloaded and exactly that is removed;
    # mail delivered while the client runs would stay.
    gone = _run(client, gateway, user, tmp_path, keep=False)
    assert len(gone) == len(first) + 1
    assert user.uids() == []


def _uidls(port: int, user) -> list[bytes]:
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        p.user(user.name)
        p.pass_(user.password)
        return [line.split(b" ", 1)[1] for line in p.uidl()[1]]
    finally:
        p.quit()


def test_concurrent_logins_after_a_reset_agree(dovecot, gateway, user):
    _mailbox(user)
    for i in range(40):
        user.deliver(simple_message(100 + i))
    before = _uidls(gateway.port, user)
    dovecot.bump_uid_validity(user.name)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        seen = list(pool.map(lambda _: _uidls(gateway.port, user), range(6)))
    assert all(s == before for s in seen)
    assert len(set(before)) == len(before)
    assert gateway.log_text().count("UIDLs re-matched") == 1


def test_a_store_deleted_while_running_refuses_logins_by_default(dovecot, gateway, user, tmp_path):
    _mailbox(user)
    _uidls(gateway.port, user)
    os.remove(tmp_path / "state" / "popgate-state.sqlite")
    p = poplib.POP3(HOST, gateway.port, timeout=30)
    p.user(user.name)
    with pytest.raises(poplib.error_proto) as refused:
        p.pass_(user.password)
    p.quit()
    assert refused.value.args[0] == b"-ERR [SYS/TEMP] Mailbox state unavailable, try again later."
    assert "UIDL store unavailable: login refused" in gateway.log_text()


def test_a_store_deleted_while_running_gives_template_uidls_when_told_to_serve(
    dovecot, user, tmp_path
):
    state = tmp_path / "state"
    extra = f'state:\n  path: "{state}"\n  on_unavailable: serve\n'
    with Popgate(dovecot.imap_port, extra=extra) as gateway:
        _mailbox(user)
        _uidls(gateway.port, user)
        os.remove(state / "popgate-state.sqlite")
        validity = dovecot.uid_validity(user.name)
        expected = [f"{uid:08x}{validity:08x}".encode() for uid in user.uids()]
        assert _uidls(gateway.port, user) == expected
        assert "UIDL store unavailable: template UIDLs" in gateway.log_text()


def test_kill_9_during_a_rematch_leaves_no_half_written_state(dovecot, gateway, user):
    """popgate is killed at varying points of a re-match of a mailbox of
    3,000 messages; after each restart the UIDLs are the ones given first."""
    user.dv.deliver_many(user.name, (simple_message(i) for i in range(10000)))
    before = _uidls(gateway.port, user)
    assert len(before) == 10000
    rnd = random.Random(11)
    for _ in range(4):
        dovecot.bump_uid_validity(user.name)
        t = threading.Thread(target=lambda: _try(lambda: _uidls(gateway.port, user)))
        t.start()
        time.sleep(rnd.uniform(0, 0.4))
        gateway.kill()
        t.join(60)
        # A fresh log, so that start() waits for the new "listening on".
        open(gateway.log_path, "w").close()
        gateway.start()
        assert _uidls(gateway.port, user) == before


def _try(fn):
    try:
        fn()
    except Exception:  # the kill ends the session any way it likes
        pass
