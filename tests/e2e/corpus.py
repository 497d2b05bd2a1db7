"""Test mail: raw RFC 5322 messages that stress a POP3 gateway.

Every message is bytes exactly as stored in the Maildir file.  Most are
stored with LF line ends (as Maildir usually holds them; IMAP serves them
with CRLF), one is stored with CRLF.  The trickiest cases for RETR/TOP:
dot-stuffing, 8-bit bytes, missing final newline, empty or missing body.
"""

from __future__ import annotations

import base64
import random

DOMAIN = "popgate.test"


def _headers(n: int, subject: str, extra: str = "") -> str:
    return (
        f"From: Sender {n} <sender{n}@{DOMAIN}>\n"
        f"To: Alice <alice@{DOMAIN}>\n"
        f"Subject: {subject}\n"
        f"Date: Mon, 02 Mar 2026 10:{n:02d}:00 +0000\n"
        f"Message-ID: <tricky-{n}@{DOMAIN}>\n"
        f"{extra}"
    )


def _lf(n: int, subject: str, body: str, extra: str = "") -> bytes:
    return (_headers(n, subject, extra) + "\n" + body).encode("utf-8")


def tricky_corpus() -> list[tuple[str, bytes]]:
    """(short name, raw message) pairs; see tricky_messages()."""
    msgs: list[tuple[str, bytes]] = []

    # 1. A lone "." in the middle of the body: must be sent as "..".
    msgs.append(("lone-dot", _lf(1, "lone dot line", "before\n.\nafter\n")))

    # 2. Lines starting with "." and "..": each gets one more dot on the wire.
    msgs.append(("leading-dots", _lf(2, "leading dots", (
        ".starts with one dot\n"
        "..starts with two dots\n"
        "...three\n"
        ". dot space\n"
        "normal line\n"
        ".\t.tab\n"
    ))))

    # 3. 8-bit body: raw UTF-8 and raw Latin-1 (not valid UTF-8), no MIME
    #    declaration for the latter on purpose.
    body8 = ("UTF-8: Grüße, naïve café, Ελληνικά, 日本語, emoji 📬\n".encode("utf-8")
             + b"Latin-1: Gr\xfc\xdfe, na\xefve caf\xe9\n"
             + b"high bytes: \x80\x81\xfe\xff\n")
    msgs.append(("8bit", _headers(3, "8-bit body", (
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n")).encode() + b"\n" + body8))

    # 4. A long folded header: many continuation lines, > 1000 octets total.
    refs = "\n".join(f"\t<reference-{i:03d}.{'x' * 40}@{DOMAIN}>" for i in range(30))
    msgs.append(("folded-header", _lf(
        4, "long folded header", "The References header above is long.\n",
        extra=f"References:\n{refs}\n")))

    # 5. No final newline: the last body line ends without LF.
    msgs.append(("no-final-newline", _lf(
        5, "no final newline", "first line\nlast line without newline")))

    # 6. Stored with CRLF line ends (including a dot line).
    crlf = _lf(6, "stored with CRLF", "line one\n.\n..two\nend\n").replace(b"\n", b"\r\n")
    msgs.append(("crlf", crlf))

    # 7. Empty body: header, blank line, nothing else.
    msgs.append(("empty-body", _lf(7, "empty body", "")))

    # 8. Only a header: no blank line, no body.
    msgs.append(("header-only", _headers(8, "header only, no blank line").encode()))

    # 9. Body ends with a line of exactly ".": stuffing right before the
    #    terminator (wire: "..\r\n.\r\n").
    msgs.append(("dot-at-end", _lf(9, "dot at end", "the last line is a dot\n.\n")))

    # 10. Body ends with "." and no newline at all.
    msgs.append(("dot-no-newline", _lf(10, "dot without newline", "then a dot\n.")))

    # 11. A very long body line (poplib's default limit is 2048 octets) and
    #     a long line starting with a dot.
    msgs.append(("long-lines", _lf(11, "long lines",
                                   "L" * 5000 + "\n" + "." + "D" * 3000 + "\nshort\n")))

    return msgs


def tricky_messages() -> list[bytes]:
    """About ten raw messages, each with From/To/Subject/Date/Message-ID:
    lone "." line, lines starting with "." and "..", 8-bit UTF-8 and
    Latin-1 bytes, a long folded header (> 1000 octets), no final newline,
    one stored with CRLF (the rest LF), empty body, header only (no blank
    line), a body ending with a "." line, "." without newline, very long
    lines."""
    return [raw for _name, raw in tricky_corpus()]


def simple_message(i: int, body_lines: int = 3) -> bytes:
    """A small plain message for bulk mailboxes; Message-ID <bulk-i@...>."""
    body = "".join(f"Line {j} of message {i}.\n" for j in range(body_lines))
    return (
        f"From: Bulk Sender <bulk@{DOMAIN}>\n"
        f"To: Alice <alice@{DOMAIN}>\n"
        f"Subject: Message {i}\n"
        f"Date: Tue, 03 Mar 2026 12:00:00 +0000\n"
        f"Message-ID: <bulk-{i}@{DOMAIN}>\n"
        f"\n{body}"
    ).encode()


def large_attachment(size_bytes: int = 2_000_000, seed: int = 1) -> bytes:
    """A multipart/mixed message with a base64 attachment, LF line ends,
    about size_bytes long (within a few hundred octets).  The content is
    deterministic for a given (size_bytes, seed)."""
    head = (
        f"From: Big Sender <big@{DOMAIN}>\n"
        f"To: Alice <alice@{DOMAIN}>\n"
        f"Subject: Large attachment ({size_bytes} bytes)\n"
        f"Date: Wed, 04 Mar 2026 08:00:00 +0000\n"
        f"Message-ID: <large-{size_bytes}-{seed}@{DOMAIN}>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="=-popgate-boundary-="\n'
        "\n"
        "This is a multi-part message in MIME format.\n"
        "--=-popgate-boundary-=\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "See the attached file.\n"
        "\n"
        "--=-popgate-boundary-=\n"
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="blob.bin"\n'
        "Content-Transfer-Encoding: base64\n"
        "\n"
    ).encode()
    tail = b"--=-popgate-boundary-=--\n"
    room = max(0, size_bytes - len(head) - len(tail))
    # 57 raw bytes -> 76 base64 chars + LF = 77 octets.
    nbytes = max(1, room // 77 * 57)
    data = random.Random(seed).randbytes(nbytes)
    b64 = base64.encodebytes(data)  # 76-char lines, LF ends
    return head + b64 + tail


def to_crlf(raw: bytes) -> bytes:
    """The message as IMAP serves it (BODY[]): every bare LF becomes CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def retr_wire(body: bytes) -> bytes:
    """The exact multi-line POP3 payload that follows the "+OK" line of
    RETR for a message whose IMAP BODY[] is `body`: dot-stuffed, CRLF line
    ends, a CRLF added when the message lacks a final one, then the
    terminating dot line."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body[:-2].split(b"\r\n")
    stuffed = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


__all__ = ["tricky_corpus", "tricky_messages", "simple_message",
           "large_attachment", "to_crlf", "retr_wire"]
