"""Reading and preparing folders other than INBOX straight from Dovecot,
for the delete dispositions and multi-folder maildrops."""

from __future__ import annotations

import imaplib
import re

_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def exists(dv, user: str, folder: str) -> bool:
    c = dv.imap(user, select=False)
    try:
        typ, data = c.list('""', folder)
        return typ == "OK" and any(d for d in data if d)
    finally:
        c.logout()


def contents(dv, user: str, folder: str) -> dict[int, tuple[frozenset, bytes]]:
    """UID -> (flags, body) of `folder`; {} when it does not exist."""
    c = dv.imap(user, select=False)
    try:
        typ, _ = c.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            return {}
        typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item
            uid, flags = _UID.search(head), _FLAGS.search(head)
            assert uid is not None and flags is not None, head
            out[int(uid.group(1))] = (frozenset(flags.group(1).decode().split()) - {"\\Recent"}, body)
        return out
    finally:
        c.logout()


def create(dv, user: str, folder: str) -> None:
    c = dv.imap(user, select=False)
    try:
        typ, data = c.create(f'"{folder}"')
        assert typ == "OK", data
    finally:
        c.logout()


def append(dv, user: str, folder: str, raw: bytes, when: float | None = None) -> None:
    """APPENDs `raw`; `when` (seconds since 1970) sets its INTERNALDATE."""
    c = dv.imap(user, select=False)
    try:
        date = imaplib.Time2Internaldate(when) if when is not None else None
        typ, data = c.append(f'"{folder}"', None, date, raw)
        assert typ == "OK", data
    finally:
        c.logout()
