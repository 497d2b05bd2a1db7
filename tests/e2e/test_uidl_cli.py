"""`popgate uidl show` and `popgate uidl forget` on the store that real
logins through popgate wrote: `show` prints exactly the UIDLs POP3 UIDL
gave, template ones and exceptions kept across a UIDVALIDITY change;
`forget` drops the memory and the next login records it afresh; a running
popgate's store is refused by name, not waited for."""

from __future__ import annotations

import os
import poplib
import subprocess

import pytest

from corpus import CLIENT_MESSAGES, simple_message
from popgate import Popgate, binary

HOST = "127.0.0.1"


@pytest.fixture
def gateway(dovecot, tmp_path):
    state = tmp_path / "state"
    with Popgate(dovecot.imap_port, extra=f'state:\n  path: "{state}"\n') as pg:
        pg.store_file = str(state / "popgate-state.sqlite")
        yield pg


def _uidls(port: int, user, login: str | None = None) -> list[str]:
    """UIDL's answer, in message-number order (which is UID order)."""
    p = poplib.POP3(HOST, port, timeout=30)
    try:
        p.user(login or user.name)
        p.pass_(user.password)
        return [line.split(b" ", 1)[1].decode() for line in p.uidl()[1]]
    finally:
        p.quit()


def _uidl_cli(*args: str) -> subprocess.CompletedProcess:
    # The timeout guards against a hang.
    return subprocess.run([binary(), "uidl", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def _show(gateway, user_name: str, *more: str) -> tuple[int, list[tuple[int, str, str]]]:
    """`uidl show`: the UIDVALIDITY and (UID, UIDL, template|exception) per
    message."""
    out = _uidl_cli("show", "--config", gateway.config_path, "--user", user_name, *more)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["UID"])
    assert lines[header].split() == ["UID", "SIZE", "DATE", "UIDL", "FROM"], out.stdout
    rows = [line.split() for line in lines[header + 1:]]
    assert int(fields["messages"]) == len(rows), out.stdout
    assert int(fields["exceptions"]) == sum(r[4] == "exception" for r in rows), out.stdout
    return int(fields["uidvalidity"]), [(int(r[0]), r[3], r[4]) for r in rows]


def _restart(gateway) -> None:
    # A fresh log, so that start() waits for the new "listening on".
    open(gateway.log_path, "w").close()
    gateway.start()


def test_show_prints_the_uidls_pop3_gave_and_forget_starts_afresh(dovecot, gateway, user):
    user.deliver(*CLIENT_MESSAGES)
    given = _uidls(gateway.port, user)
    uids = user.uids()
    validity = dovecot.uid_validity(user.name)
    gateway.stop()

    shown_validity, shown = _show(gateway, user.name.upper())  # case does not matter
    assert shown_validity == validity
    assert [(uid, uidl) for uid, uidl, _ in shown] == list(zip(uids, given))
    assert {source for *_, source in shown} == {"template"}
    # A reader gone before the listing is written (`| head`): no panic.
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([binary(), "uidl", "show", "--config", gateway.config_path,
                              "--user", user.name], stdout=w, stderr=subprocess.PIPE,
                             text=True, timeout=60)
    finally:
        os.close(w)
    assert (out.returncode, out.stderr) == (0, "")

    # After a UIDVALIDITY change every message keeps its UIDL: all become
    # exceptions; a message delivered then gets the template's.
    _restart(gateway)
    new_validity = dovecot.bump_uid_validity(user.name)
    user.deliver(simple_message(1))
    after = _uidls(gateway.port, user)
    assert after[:-1] == given
    gateway.stop()
    shown_validity, shown = _show(gateway, user.name)
    assert shown_validity == new_validity != validity
    assert [(uid, uidl) for uid, uidl, _ in shown] == list(zip(user.uids(), after))
    assert [source for *_, source in shown] == ["exception"] * len(given) + ["template"]
    last_uid = user.uids()[-1]
    assert shown[-1][1] == f"{last_uid:08x}{new_validity:08x}"

    out = _uidl_cli("forget", "--config", gateway.config_path, "--user", user.name)
    assert out.returncode == 0, out.stderr
    assert "forgot" in out.stdout and f"exceptions: {len(given)}" in out.stdout, out.stdout
    out = _uidl_cli("show", "--config", gateway.config_path, "--user", user.name)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "nothing remembered" in out.stdout and user.name in out.stdout

    # The next login gives template UIDLs and records the mailbox again.
    _restart(gateway)
    fresh = _uidls(gateway.port, user)
    assert fresh == [f"{uid:08x}{new_validity:08x}" for uid in user.uids()]
    gateway.stop()
    _, shown = _show(gateway, user.name)
    assert [(uid, uidl, src) for uid, uidl, src in shown] == [
        (uid, uidl, "template") for uid, uidl in zip(user.uids(), fresh)]


def test_the_user_is_named_as_popgate_logs_in_upstream_on_its_route(dovecot, user, tmp_path):
    """A login `NAME@Example.ORG` routed to `east` with the domain stripped
    is remembered as user NAME on route east."""
    extra = (f'state:\n  path: "{tmp_path / "state"}"\n'
             f'upstreams:\n  east:\n    address: "127.0.0.1:{dovecot.imap_port}"\n'
             "routing:\n  domains:\n    example.org:\n      upstream: east\n"
             "      strip_domain: true\n")
    user.deliver(simple_message(1), simple_message(2))
    with Popgate(dovecot.imap_port, extra=extra) as pg:
        given = _uidls(pg.port, user, login=f"{user.name}@Example.ORG")
        pg.stop()
        for args in ([user.name], [f"{user.name}@example.org", "--route", "east"]):
            out = _uidl_cli("show", "--config", pg.config_path, "--user", *args)
            assert out.returncode == 1, out.stdout + out.stderr
            assert "nothing remembered" in out.stdout
        _, shown = _show(pg, user.name, "--route", "east")
        assert [(uid, uidl) for uid, uidl, _ in shown] == list(zip(user.uids(), given))


def test_show_and_forget_work_while_popgate_runs(gateway, user, dovecot):
    user.deliver(simple_message(1), simple_message(2))
    given = _uidls(gateway.port, user)
    _, shown = _show(gateway, user.name)
    assert [uidl for _, uidl, _ in shown] == given
    # A UIDVALIDITY change makes every UIDL an exception; forgetting them
    # while popgate runs gives the next login the template's UIDLs.
    dovecot.bump_uid_validity(user.name)
    assert _uidls(gateway.port, user) == given
    out = _uidl_cli("forget", "--config", gateway.config_path, "--user", user.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "panicked" not in out.stderr
    fresh = _uidls(gateway.port, user)
    assert fresh != given and len(fresh) == len(given)
    _, shown = _show(gateway, user.name)
    assert [(uidl, origin) for _, uidl, origin in shown] == [(u, "template") for u in fresh]


def test_an_unknown_user_has_nothing_remembered(gateway, user):
    user.deliver(simple_message(1))
    _uidls(gateway.port, user)
    gateway.stop()
    for name in ("nobody-here", f"{user.name}@example.org"):
        out = _uidl_cli("show", "--config", gateway.config_path, "--user", name)
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"nothing remembered for route default, user {name}, folder INBOX" in out.stdout
        out = _uidl_cli("forget", "--config", gateway.config_path, "--user", name)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "nothing to forget" in out.stdout
    # Looking for others left the user's record alone.
    assert len(_show(gateway, user.name)[1]) == 1


def test_bad_arguments_and_configs_are_refused_with_status_2(gateway, tmp_path):
    gateway.stop()
    cfg = gateway.config_path
    cases = [
        (["show", "--config", cfg], "the following required arguments were not provided"),
        (["show", "--user", "ann"], "--config <FILE>"),
        (["show", "--config", cfg, "--user", "ann", "--bogus"], "unexpected argument '--bogus'"),
        (["shove", "--config", cfg], "unrecognized subcommand 'shove'"),
        (["show", "--config", cfg, "--user", "ann", "--route", "east"], 'no such route'),
        (["show", "--config", str(tmp_path / "missing.yaml"), "--user", "ann"], "missing.yaml"),
    ]
    no_state = tmp_path / "no-state.yaml"
    with open(cfg) as f:
        no_state.write_text(f.read().split("state:")[0])
    cases.append((["forget", "--config", str(no_state), "--user", "ann"], "no `state` section"))
    for args, says in cases:
        out = _uidl_cli(*args)
        assert out.returncode == 2, f"{args}: {out.stdout}{out.stderr}"
        assert says in out.stderr, f"{args}: {out.stderr}"
        assert out.stdout == "", f"{args}: {out.stdout}"


def test_show_and_forget_work_on_a_redis_store(dovecot, user):
    """The commands read `state.redis` from the config and reach the record
    the login wrote there; the password in the URL is not printed."""
    from redisserver import RedisServer

    user.deliver(simple_message(1))
    with RedisServer(password="cli-secret-pw") as r:
        url = r.url.replace("redis://", "redis://:cli-secret-pw@")
        extra = f'state:\n  redis:\n    url: "{url}"\n'
        with Popgate(dovecot.imap_port, extra=extra) as pg:
            shown = _uidl_cli("show", "--config", pg.config_path, "--user", user.name)
            assert shown.returncode == 1, shown.stdout + shown.stderr  # nothing yet
            uidls = _uidls(pg.port, user)
            shown = _uidl_cli("show", "--config", pg.config_path, "--user", user.name)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert uidls[0] in shown.stdout
            assert r.keys("popgate:uidl:*")
            forgot = _uidl_cli("forget", "--config", pg.config_path, "--user", user.name)
            assert forgot.returncode == 0, forgot.stdout + forgot.stderr
            assert "Redis redis://127.0.0.1:" in forgot.stdout
            assert not r.keys("popgate:uidl:*")
            for out in (shown, forgot):
                assert "cli-secret-pw" not in out.stdout + out.stderr
