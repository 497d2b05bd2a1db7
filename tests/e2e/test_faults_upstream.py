"""The upstream fails at every step of login, listing, RETR and each step of
QUIT's update, and lacks extensions Dovecot always offers (UIDPLUS,
SASL-IR, AUTH=PLAIN, LITERAL+): an IMAP relay in front of the real Dovecot
cuts the link, refuses the command or hides the capability. The client
always learns the truth, and the mailbox holds exactly what QUIT's answer
says."""

from __future__ import annotations

import pytest

from corpus import large_attachment, simple_message
from faultkit import Pop3Wire, deleted, finished, seen, state
from imaprelay import ImapRelay, Rule
from pop3raw import Pop3Raw
from popgate import Popgate

UPSTREAM = "  timeout: 5s\n  health_check_interval: 60s\n"
LISTING = r"^UID FETCH 1:\* "
BODY = r"^UID FETCH \S+ \(UID BODY"
STORE_SEEN = r"^UID STORE .*\\Seen"
STORE_DELETED = r"^UID STORE .*\\Deleted"


def gateway(port: int, **kw) -> Popgate:
    return Popgate(port, upstream_extra=UPSTREAM, metrics=True, **kw)


def login_answer(pg, user) -> tuple[Pop3Wire, bytes]:
    c = Pop3Wire(pg.port)
    assert c.cmd(f"USER {user.name}").startswith(b"+OK")
    return c, c.cmd(f"PASS {user.password}")


# Login: the greeting, ID, AUTHENTICATE, SELECT and the listing.
LOGIN_FAULTS = {
    "greeting_cut_at_once": dict(greeting_cut=0),
    "greeting_cut_inside": dict(greeting_cut=10),
    "cut_at_id": dict(rule=Rule(r"^ID ", "cut")),
    "cut_at_authenticate": dict(rule=Rule(r"^AUTHENTICATE ", "cut")),
    "authenticate_done_but_unconfirmed": dict(rule=Rule(r"^AUTHENTICATE ", "cut_before_done")),
    "cut_at_select": dict(rule=Rule(r"^SELECT ", "cut")),
    "refused_select": dict(rule=Rule(r"^SELECT ", "refuse")),
    "cut_at_listing": dict(rule=Rule(LISTING, "cut_reply", after=0)),
    "cut_inside_listing": dict(rule=Rule(LISTING, "cut_reply", after=900)),
    "refused_listing": dict(rule=Rule(LISTING, "refuse")),
}


@pytest.mark.parametrize("fault", list(LOGIN_FAULTS))
def test_login_faults_answer_err_and_touch_nothing(dovecot, user, fault):
    user.deliver(*(simple_message(i) for i in range(20)))
    before = state(dovecot, user.name)
    spec = LOGIN_FAULTS[fault]
    rules = [spec["rule"]] if "rule" in spec else []
    with ImapRelay(dovecot.imap_port, *rules, greeting_cut=spec.get("greeting_cut")) as relay:
        with gateway(relay.port) as pg:
            c, answer = login_answer(pg, user)
            assert answer.startswith(b"-ERR"), answer
            c.sock.close()
            finished(pg, c.port)
            assert state(dovecot, user.name) == before
            # The next login, without the fault, works.
            relay.greeting_cut = None
            c, answer = login_answer(pg, user)
            assert answer.startswith(b"+OK"), answer
            assert c.cmd("STAT").startswith(b"+OK 20 ")
            c.sock.close()
            assert rules == [] or rules[0].fired.is_set()


def retr_fixture(user):
    user.deliver(simple_message(0), large_attachment(300_000), simple_message(2))
    return state(user.dv, user.name)


RETR_FAULTS = {
    "cut_at_fetch": Rule(BODY, "cut"),
    "cut_before_the_body": Rule(BODY, "cut_reply", after=0),
    "cut_inside_the_first_line": Rule(BODY, "cut_reply", after=30),
    "cut_after_4k": Rule(BODY, "cut_reply", after=4096),
    "cut_after_64k": Rule(BODY, "cut_reply", after=65536),
}


@pytest.mark.parametrize("fault", list(RETR_FAULTS))
def test_retr_cut_never_looks_complete_and_touches_nothing(dovecot, user, fault):
    before = retr_fixture(user)
    rule = RETR_FAULTS[fault]
    with ImapRelay(dovecot.imap_port, rule) as relay, gateway(relay.port) as pg:
        c = Pop3Wire(pg.port)
        c.login(user.name, user.password)
        assert c.cmd("DELE 1").startswith(b"+OK")
        c.sock.sendall(b"RETR 2\r\n")
        got, closed = c.read_to_end()
        assert closed
        # A truncated message must not end like a complete one.
        assert not got.endswith(b"\r\n.\r\n"), got[-200:]
        assert finished(pg, c.port) == "upstream_failure"
    assert state(dovecot, user.name) == before


def test_retr_done_but_unconfirmed_touches_nothing(dovecot, user):
    before = retr_fixture(user)
    rule = Rule(BODY, "cut_before_done")
    with ImapRelay(dovecot.imap_port, rule) as relay, gateway(relay.port) as pg:
        c = Pop3Wire(pg.port)
        c.login(user.name, user.password)
        assert c.cmd("DELE 1").startswith(b"+OK")
        c.sock.sendall(b"RETR 2\r\nQUIT\r\n")
        got, closed = c.read_to_end()
        assert closed and rule.done.is_set()
        finished(pg, c.port)
    assert state(dovecot, user.name) == before


def test_refused_body_fetch_answers_err_and_the_session_goes_on(dovecot, user):
    before = retr_fixture(user)
    u = sorted(before)
    with ImapRelay(dovecot.imap_port, Rule(BODY, "refuse")) as relay, gateway(relay.port) as pg:
        c = Pop3Wire(pg.port)
        c.login(user.name, user.password)
        assert c.cmd("RETR 3").startswith(b"-ERR")
        assert c.retr(3) == before[u[2]][1]
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
        finished(pg, c.port)
    after = state(dovecot, user.name)
    assert sorted(after) == u[1:]
    assert seen(after) == [u[2]]
    assert after[u[1]] == before[u[1]]


# QUIT after RETR 1 and DELE 2: the \Seen store, the \Deleted store, the
# expunge and the logout, each cut before it reaches the server, or done
# by the server with the confirmation lost.
QUIT_FAULTS = {
    # fault: (rule, QUIT answer, message 1 seen, message 2 flagged, message 2 gone)
    "cut_at_store_seen": (Rule(STORE_SEEN, "cut"), b"-ERR", False, False, False),
    "store_seen_unconfirmed": (Rule(STORE_SEEN, "cut_before_done"), b"-ERR", True, False, False),
    "refused_store_seen": (Rule(STORE_SEEN, "refuse"), b"+OK", False, True, True),
    "cut_at_store_deleted": (Rule(STORE_DELETED, "cut"), b"-ERR", True, False, False),
    "store_deleted_unconfirmed": (Rule(STORE_DELETED, "cut_before_done"), b"-ERR", True, True, False),
    "cut_at_expunge": (Rule(r"^UID EXPUNGE ", "cut"), b"-ERR", True, True, False),
    "expunge_unconfirmed": (Rule(r"^UID EXPUNGE ", "cut_before_done"), b"-ERR", True, True, True),
    "cut_at_logout": (Rule(r"^LOGOUT", "cut"), b"+OK", True, True, True),
    "refused_logout": (Rule(r"^LOGOUT", "refuse"), b"+OK", True, True, True),
}


@pytest.mark.parametrize("fault", list(QUIT_FAULTS))
def test_quit_faults_leave_what_quit_says(dovecot, user, fault):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = state(dovecot, user.name)
    u = sorted(before)
    rule, answer, one_seen, two_flagged, two_gone = QUIT_FAULTS[fault]
    with ImapRelay(dovecot.imap_port, rule) as relay, gateway(relay.port) as pg:
        c = Pop3Wire(pg.port)
        c.login(user.name, user.password)
        c.retr_dele_quit()
        reply = c.line()
        assert rule.fired.is_set()
        assert reply.startswith(answer), reply
        if answer == b"-ERR":
            assert reply.startswith(b"-ERR [SYS/TEMP] ")
        finished(pg, c.port)
    after = state(dovecot, user.name)
    assert (u[1] not in after) == two_gone
    assert sorted(after) == ([u[0], u[2]] if two_gone else u)
    assert ("\\Seen" in after[u[0]][0]) == one_seen
    if not two_gone:
        assert ("\\Deleted" in after[u[1]][0]) == two_flagged
    # Nothing else changed: no other flags, every body intact.
    assert deleted(after) == ([u[1]] if two_flagged and not two_gone else [])
    assert after[u[2]] == before[u[2]]
    for uid, (_, body) in after.items():
        assert body == before[uid][1]


def delete_two_again(pg, user) -> None:
    """A new session still lists all three messages and deletes the second."""
    c = Pop3Wire(pg.port)
    c.login(user.name, user.password)
    assert c.cmd("STAT").startswith(b"+OK 3 ")
    assert c.cmd("DELE 2").startswith(b"+OK")
    assert c.cmd("QUIT").startswith(b"+OK")
    finished(pg, c.port)


def test_refused_expunge_can_be_retried_by_the_next_session(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    with ImapRelay(dovecot.imap_port, Rule(r"^UID EXPUNGE ", "refuse")) as relay, gateway(relay.port) as pg:
        c = Pop3Wire(pg.port)
        c.login(user.name, user.password)
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"-ERR [SYS/TEMP] ")
        finished(pg, c.port)
        after = state(dovecot, user.name)
        assert sorted(after) == u
        assert deleted(after) == []  # no \Deleted left behind by the gateway
        delete_two_again(pg, user)
    assert user.uids() == [u[0], u[2]]


def test_refused_expunge_without_uidplus_can_be_retried(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    refusal = Rule(r"^EXPUNGE", "refuse", every=True)
    with ImapRelay(dovecot.imap_port, refusal, hide=("UIDPLUS",)) as proxy:
        with gateway(proxy.port) as pg:
            c = Pop3Wire(pg.port)
            c.login(user.name, user.password)
            assert c.cmd("DELE 2").startswith(b"+OK")
            assert c.cmd("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            finished(pg, c.port)
        assert refusal.fired.is_set()
    after = state(dovecot, user.name)
    assert sorted(after) == u and deleted(after) == []
    with gateway(dovecot.imap_port) as pg:
        delete_two_again(pg, user)
    assert user.uids() == [u[0], u[2]]


# ---- refusals at QUIT and servers without UIDPLUS, SASL-IR or AUTH=PLAIN


def test_refused_removal_makes_quit_fail(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    refusal = Rule(r"^UID STORE .*\\Deleted", "refuse", every=True)
    with ImapRelay(dovecot.imap_port, refusal) as proxy:
        with Popgate(proxy.port) as pg, user.pop3(pg.port) as c:
            c.answer("DELE 2")
            assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
        assert refusal.fired.is_set()
    assert user.uids() == before


def test_refused_expunge_takes_our_flags_back_for_the_next_session(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    before = user.uids()
    refusal = Rule(r"^UID EXPUNGE", "refuse", every=True)
    with ImapRelay(dovecot.imap_port, refusal) as proxy:
        with Popgate(proxy.port) as pg:
            with user.pop3(pg.port) as c:
                c.answer("DELE 2")
                assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            assert refusal.fired.is_set()
            assert user.uids() == before
            assert not any("\\Deleted" in f for f in user.dv.flags(user.name).values())
            with user.pop3(pg.port) as c:
                assert c.answer("STAT").startswith(b"+OK 3 ")


def test_without_uidplus_only_our_messages_are_expunged(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    with ImapRelay(dovecot.imap_port, hide=("UIDPLUS",)) as proxy:
        with Popgate(proxy.port) as pg, user.pop3(pg.port) as c:
            c.answer("DELE 1")
            assert c.answer("QUIT").startswith(b"+OK")
        sent = b"".join(proxy.seen)
        assert b"UID EXPUNGE" not in sent and b" EXPUNGE\r\n" in sent
    assert user.uids() == u[1:]


def test_without_uidplus_other_deleted_flags_block_the_expunge(dovecot, user):
    user.deliver(*(simple_message(i) for i in range(3)))
    u = user.uids()
    with ImapRelay(dovecot.imap_port, hide=("UIDPLUS",)) as proxy:
        with Popgate(proxy.port) as pg:
            with user.pop3(pg.port) as c:
                user.dv.set_flags(user.name, u[2], "\\Deleted")  # another client
                c.answer("DELE 1")
                # QUIT says the removal did not happen, and it did not.
                assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP] ")
            assert b" EXPUNGE\r\n" not in b"".join(proxy.seen)
            assert user.uids() == u
            assert "\\Deleted" not in user.dv.flags(user.name)[u[0]], "our flag was taken back"
            # The next session still sees the message and may delete it again.
            with user.pop3(pg.port) as c:
                assert c.answer("STAT").startswith(b"+OK 2 ")


@pytest.mark.parametrize("hidden", [("SASL-IR",), ("AUTH=PLAIN",), ("AUTH=PLAIN", "LITERAL+")])
def test_login_fallbacks_carry_any_password(dovecot, hidden):
    name = "fallback-" + "-".join(h.lower().replace("=", "").replace("+", "plus") for h in hidden)
    password = 'ütf8 "quoted" \\ {3}'
    dovecot.add_user(name, password)
    dovecot.deliver(name, simple_message(1))
    with ImapRelay(dovecot.imap_port, hide=hidden) as proxy:
        with Popgate(proxy.port) as pg, Pop3Raw(pg.port) as c:
            assert c.login(name, password).startswith(b"+OK")
            assert c.answer("STAT").startswith(b"+OK 1 ")
        sent = b"".join(proxy.seen)
        if "AUTH=PLAIN" in hidden:
            assert b" LOGIN " in sent
            assert (b"+}" in sent) == ("LITERAL+" not in hidden)
        else:
            assert b"AUTHENTICATE PLAIN\r\n" in sent
