"""Shared fixtures: one Dovecot and one popgate for the whole run, and a
fresh user (with its own mailbox) per test."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dovecot import Dovecot  # noqa: E402
from pop3raw import Pop3Raw  # noqa: E402
import popgate  # noqa: E402
from popgate import Popgate  # noqa: E402

_users = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def _no_popgate_left():
    """At the end of the run, stops every popgate a test started outside a
    ``with`` block and removes its directory."""
    yield
    popgate.cleanup_all()


@pytest.fixture(scope="session")
def dovecot():
    with Dovecot() as dv:
        yield dv


@pytest.fixture(scope="session")
def gateway(dovecot):
    with Popgate(dovecot.imap_port) as pg:
        yield pg


class User:
    def __init__(self, dv: Dovecot, name: str, password: str) -> None:
        self.dv, self.name, self.password = dv, name, password

    def deliver(self, *messages: bytes) -> None:
        for m in messages:
            self.dv.deliver(self.name, m)

    def pop3(self, port: int) -> Pop3Raw:
        """A POP3 connection to `port`, logged in as this user."""
        c = Pop3Raw(port)
        assert c.login(self.name, self.password).startswith(b"+OK")
        return c

    def uids(self) -> list[int]:
        return self.dv.uids(self.name)

    def bodies(self) -> dict[int, bytes]:
        return self.dv.bodies(self.name)


@pytest.fixture
def user(dovecot) -> User:
    """A new user with an empty mailbox and a password with a space."""
    name = f"u{next(_users)}"
    password = f"pw {name} x"
    dovecot.add_user(name, password)
    return User(dovecot, name, password)


def pytest_collection_modifyitems(config, items):
    """POPGATE_E2E_ORDER=reverse runs the tests backwards, and
    POPGATE_E2E_ORDER=random:SEED shuffles them: no test may depend on
    another's side effects, and these orders show it."""
    import os
    import random

    order = os.environ.get("POPGATE_E2E_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("random:"):
        random.Random(order.split(":", 1)[1]).shuffle(items)
