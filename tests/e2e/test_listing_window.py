"""`session.max_messages`: the maildrop is the newest N messages; the older
ones are neither listed nor touched, and keep their UIDLs for when the
window reaches them."""

from __future__ import annotations

import re

from corpus import simple_message
from popgate import Popgate


def _uidls(c) -> list[bytes]:
    return re.findall(rb"^\d+ (\S+)\r$", c.answer("UIDL"), re.M)


def test_only_the_newest_messages_are_listed_and_touched(dovecot, user, tmp_path):
    user.deliver(*(simple_message(i) for i in range(5)))
    uids = user.uids()
    sizes = dovecot.sizes(user.name)
    with Popgate(dovecot.imap_port) as pg, user.pop3(pg.port) as c:
        every = _uidls(c)
    state = f"state:\n  path: {tmp_path}\n"
    with Popgate(dovecot.imap_port, extra="session:\n  max_messages: 2\n" + state) as pg:
        with user.pop3(pg.port) as c:
            total = sizes[uids[3]] + sizes[uids[4]]
            assert c.answer("STAT") == b"+OK 2 %d\r\n" % total
            assert c.answer("LIST") == (b"+OK 2 messages:\r\n1 %d\r\n2 %d\r\n.\r\n" % (sizes[uids[3]], sizes[uids[4]]))
            assert _uidls(c) == every[3:]
            assert c.answer("RETR 3").startswith(b"-ERR")
            assert c.answer("DELE 1").startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"+OK")
        assert user.uids() == uids[:3] + uids[4:]
        # The window moves down once the newest are gone; UIDLs stay.
        with user.pop3(pg.port) as c:
            assert _uidls(c) == [every[2], every[4]]
            assert c.answer("QUIT").startswith(b"+OK")
    with Popgate(dovecot.imap_port, extra="session:\n  max_messages: 0\n") as pg, user.pop3(pg.port) as c:
        assert c.answer("STAT").startswith(b"+OK 4 ")
