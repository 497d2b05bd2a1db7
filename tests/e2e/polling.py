"""Waiting for something the server does in the background (a reload, a
metric, a log line) without fixed sleeps."""

from __future__ import annotations

import time

import pytest


def wait_for(predicate, timeout: float = 15, what: str = "the condition", interval: float = 0.05):
    """Polls until `predicate()` is truthy and returns its value; fails the
    test after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def upstream_session_ended(dovecot, user: str) -> bool:
    """Dovecot has logged the end of an IMAP session of `user`, so whatever
    popgate did upstream in that session has happened: the moment to check
    that something did not."""
    import re

    pattern = rf"imap\({re.escape(user)}\)<[^>]*>.*(Logged out|Disconnected)"
    return re.search(pattern, dovecot.log_text()) is not None
