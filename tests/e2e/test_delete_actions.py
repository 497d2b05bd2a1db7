"""What DELE does at QUIT (`delete.action`): expunge, move to a folder, or
flag with a keyword, each through a real client in delete mode, and a
refusal injected at every upstream step of move and flag: QUIT answers
-ERR and no message is lost or hidden."""

from __future__ import annotations

import pytest

import folders
from clients import download
from corpus import simple_message
from imaprelay import ImapRelay, Rule
from popgate import Popgate

MOVE = "delete:\n  action: move\n  folder: Trash\n"
FLAG = 'delete:\n  action: flag\n  keyword: "$POP3Deleted"\n'


def _inbox(user) -> dict[int, tuple[frozenset, bytes]]:
    return folders.contents(user.dv, user.name, "INBOX")


def _bodies(st: dict) -> set[bytes]:
    return {body for _, body in st.values()}


@pytest.mark.parametrize("hide", [(), ("MOVE",)], ids=["uid-move", "uid-copy"])
@pytest.mark.parametrize("client", ["fetchmail", "mpop", "poplib"])
def test_move_leaves_the_downloaded_messages_in_a_created_folder(dovecot, user, client, hide, tmp_path):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = _bodies(_inbox(user))
    assert not folders.exists(dovecot, user.name, "Trash")
    with ImapRelay(dovecot.imap_port, hide=hide) as proxy:
        with Popgate(proxy.port, extra=MOVE) as pg:
            got = download(client, "127.0.0.1", pg.port, user.name, user.password, keep=False, workdir=tmp_path)
            assert len(got) == 3
            assert "creating the folder for deleted messages" in pg.log_text()
        sent = b"".join(proxy.seen)
        assert (b" UID MOVE " in sent) == (hide == ())
        assert (b" UID COPY " in sent) == (hide != ())
    assert _inbox(user) == {}
    trash = folders.contents(dovecot, user.name, "Trash")
    assert _bodies(trash) == before
    assert not any("\\Deleted" in flags for flags, _ in trash.values())


@pytest.mark.parametrize("hide", [(), ("MOVE",)], ids=["uid-move", "uid-copy"])
def test_move_takes_exactly_the_deleted_into_an_existing_folder(dovecot, user, hide):
    user.deliver(*(simple_message(i) for i in range(4)))
    folders.create(dovecot, user.name, "Trash")
    folders.append(dovecot, user.name, "Trash", simple_message(99))
    there = _bodies(folders.contents(dovecot, user.name, "Trash"))
    inbox = _inbox(user)
    uids = sorted(inbox)
    with ImapRelay(dovecot.imap_port, hide=hide) as proxy:
        with Popgate(proxy.port, extra=MOVE) as pg:
            with user.pop3(pg.port) as c:
                assert c.answer("DELE 2").startswith(b"+OK")
                assert c.answer("DELE 4").startswith(b"+OK")
                assert c.answer("QUIT") == b"+OK Logging out, messages moved.\r\n"
            assert "creating the folder" not in pg.log_text()
    left = _inbox(user)
    assert sorted(left) == [uids[0], uids[2]]
    assert not any("\\Deleted" in flags for flags, _ in left.values())
    trash = _bodies(folders.contents(dovecot, user.name, "Trash"))
    assert trash == there | {inbox[uids[1]][1], inbox[uids[3]][1]}


@pytest.mark.parametrize("client", ["fetchmail", "mpop", "poplib"])
def test_flag_keeps_the_messages_flagged_and_invisible(dovecot, user, client, tmp_path):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = _inbox(user)
    with Popgate(dovecot.imap_port, extra=FLAG) as pg:
        got = download(client, "127.0.0.1", pg.port, user.name, user.password, keep=False, workdir=tmp_path)
        assert len(got) == 3
        after = _inbox(user)
        assert sorted(after) == sorted(before)
        assert all({"$POP3Deleted", "\\Seen"} <= flags for flags, _ in after.values())
        assert not any("\\Deleted" in flags for flags, _ in after.values())
        assert _bodies(after) == _bodies(before)
        with user.pop3(pg.port) as c:
            assert c.answer("STAT") == b"+OK 0 0\r\n"
            assert c.answer("QUIT").startswith(b"+OK")
        # A message that arrives later is the only one a client sees.
        user.deliver(simple_message(7))
        with user.pop3(pg.port) as c:
            assert c.answer("STAT").startswith(b"+OK 1 ")
    # Without the flag action the keyword hides nothing.
    with Popgate(dovecot.imap_port) as pg, user.pop3(pg.port) as c:
        assert c.answer("STAT").startswith(b"+OK 4 ")


# (config, capabilities hidden, the command refused)
STEPS = {
    "move-create": (MOVE, (), r"^CREATE "),
    "move-uid-move": (MOVE, (), r"^UID MOVE "),
    "copy-create": (MOVE, ("MOVE",), r"^CREATE "),
    "copy-uid-copy": (MOVE, ("MOVE",), r"^UID COPY "),
    "copy-store-deleted": (MOVE, ("MOVE",), r"^UID STORE .*\\Deleted"),
    "copy-uid-expunge": (MOVE, ("MOVE",), r"^UID EXPUNGE "),
    "flag-store": (FLAG, (), r"^UID STORE .*\$POP3Deleted"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_refused_step_answers_quit_with_err_and_loses_nothing(dovecot, user, step):
    extra, hide, refuse = STEPS[step]
    user.deliver(*(simple_message(i) for i in range(3)))
    before = _inbox(user)
    refusal = Rule(refuse, "refuse", every=True)
    with ImapRelay(dovecot.imap_port, refusal, hide=hide) as proxy:
        with Popgate(proxy.port, extra=extra) as pg:
            with user.pop3(pg.port) as c:
                assert c.answer("RETR 1").startswith(b"+OK")
                assert c.answer("DELE 1").startswith(b"+OK")
                assert c.answer("DELE 3").startswith(b"+OK")
                assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            assert refusal.fired.is_set(), "the step was never reached"
            after = _inbox(user)
            assert sorted(after) == sorted(before), "a message left the mailbox"
            assert _bodies(after) == _bodies(before)
            for flags, _ in after.values():
                assert not flags & {"\\Deleted", "$POP3Deleted"}, flags
            # Whatever reached the folder is a copy of a message still here.
            assert _bodies(folders.contents(dovecot, user.name, "Trash")) <= _bodies(before)
            # The next session sees every message and may delete again.
            with user.pop3(pg.port) as c:
                assert c.answer("STAT").startswith(b"+OK 3 ")


@pytest.mark.parametrize(
    "text,error",
    [
        ("delete:\n  action: move\n  folder: INBOX\n", "delete.folder"),
        ("delete:\n  action: move\n  folder: \"\"\n", "delete.folder"),
        ('delete:\n  action: flag\n  keyword: "two words"\n', "delete.keyword"),
        ('delete:\n  action: flag\n  keyword: "\\\\Deleted"\n', "delete.keyword"),
        ("delete:\n  action: archive\n", "delete.action"),
    ],
)
def test_bad_delete_settings_name_the_key(dovecot, text, error):
    pg = Popgate(dovecot.imap_port, extra=text, start=False)
    try:
        with pytest.raises(RuntimeError) as e:
            pg.start()
        assert error in str(e.value)
    finally:
        pg.cleanup()
