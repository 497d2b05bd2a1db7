"""Test mail: raw RFC 5322 messages that stress a POP3 gateway, the
mailbox the real clients download, and the benchmark's bulk mail.

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


# ------------------------------------------- what the real clients download

LONG_LINE = b"L" * 3000  # longer than poplib's default 2048-byte limit

CLIENT_MESSAGES = [
    # LF-stored; dot lines, a "From " line, headers some clients like to drop.
    b"Return-Path: <bounce@example.org>\n"
    b"Delivered-To: alice@example.org\n"
    b"From: Alice <alice@example.org>\n"
    b"To: bob@example.org\n"
    b"Subject: dots\n"
    b"Message-ID: <m1@clients.test>\n"
    b"Status: RO\n"
    b"\n"
    b"line one\n"
    b".\n"
    b"..two dots\n"
    b".leading dot\n"
    b". dot space\n"
    b"From the start of a line\n"
    b">From quoted\n"
    b"end\n",
    # CRLF-stored; 8-bit bytes in a header and in the body (not UTF-8).
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: 8bit \xc3\xa4\xc3\xb6\r\n"
    b"Message-ID: <m2@clients.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=latin-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xe9 \xff\xfe raw\r\n"
    b"\r\n"
    b"\r\n"
    b"two blank lines above\r\n",
    # No final newline.
    b"From: c@example.org\n"
    b"To: alice@example.org\n"
    b"Subject: no final newline\n"
    b"Message-ID: <m3@clients.test>\n"
    b"\n"
    b"first\n"
    b"last line without newline",
    # MIME, folded and long headers, "Name:value", a 3000-byte line.
    b"From: d@example.org\n"
    b"To: alice@example.org\n"
    b"Subject: a very long subject line that goes on and on and on well beyond"
    b" seventy-eight characters for sure\n"
    b"X-Folded: part one\n"
    b"\tpart two\n"
    b"  part three\n"
    b"X-Tight:value\n"
    b"Message-ID: <m4@clients.test>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"BOUND\"\n"
    b"\n"
    b"preamble\n"
    b"--BOUND\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b".\n"
    b"body part\n"
    + LONG_LINE + b"\n"
    b"--BOUND--\n"
    b"epilogue\n",
    # Body starts with a dot line and ends with a lone "." without newline.
    b"From: e@example.org\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: ends in a dot\r\n"
    b"Message-ID: <m5@clients.test>\r\n"
    b"\r\n"
    b".first\r\n"
    b"middle\r\n"
    b".",
]


# ----------------------------------------------------- the benchmark's mail

BENCH_DOMAIN = "bench.popgate.test"


def _bench_headers(i: int, subject: str, extra: str = "") -> bytes:
    sender = f"sender{i % 97}@{BENCH_DOMAIN}"
    fields = {
        "Return-Path": f"<{sender}>",
        "From": f"Sender {i % 97} <{sender}>",
        "To": f"Bench User <user@{BENCH_DOMAIN}>",
        "Subject": f"{subject} {i}",
        "Date": f"Mon, 02 Mar 2026 10:{i % 60:02d}:{(i // 60) % 60:02d} +0000",
        "Message-ID": f"<bench-{i}-{random.getrandbits(32):08x}@{BENCH_DOMAIN}>",
        "MIME-Version": "1.0",
    }
    return ("".join(f"{k}: {v}\n" for k, v in fields.items()) + extra).encode()


def attachment_message(i: int, size: int, rnd: random.Random | None = None,
                       body: bytes | None = None) -> bytes:
    """A message of about ``size`` octets: a short text part and a base64
    attachment (76-character lines, LF line ends as Maildir stores them)."""
    if body is None:
        rnd = rnd or random.Random(i)
        raw = rnd.randbytes(max(0, size - 600) * 3 // 4)
        body = base64.encodebytes(raw)
    return (
        _bench_headers(i, "Report", 'Content-Type: multipart/mixed; boundary="b1"\n')
        + b"\n--b1\nContent-Type: text/plain; charset=utf-8\n\nSee the attachment.\n"
        + b"--b1\nContent-Type: application/octet-stream; name=\"data.bin\"\n"
        + b"Content-Transfer-Encoding: base64\n\n"
        + body
        + b"--b1--\n"
    )


def attachment_body(size: int, seed: int) -> bytes:
    """The base64 part of attachment_message(), made once and shared."""
    rnd = random.Random(seed)
    return base64.encodebytes(rnd.randbytes(max(0, size - 600) * 3 // 4))


_TEXT = (
    b"Hello,\n\nthis is a short message of the kind a mailbox holds by the\n"
    b"thousand: a notification, a reply, a receipt.  It has a few lines of\n"
    b"plain text and nothing else.\n\n"
    b".a line that starts with a dot, to keep the stuffer honest\n\n"
    b"Regards,\nthe benchmark\n"
)


def small_message(i: int) -> bytes:
    """About 1 KB: headers and a few lines of text."""
    return _bench_headers(i, "Note", "Content-Type: text/plain; charset=utf-8\n") + b"\n" + _TEXT * 2


def small_messages(n: int):
    return (small_message(i) for i in range(1, n + 1))


def attachment_messages(n: int, size: int, seed: int = 1):
    body = attachment_body(size, seed)
    return (attachment_message(i, size, body=body) for i in range(1, n + 1))


__all__ = ["tricky_corpus", "tricky_messages", "simple_message",
           "large_attachment", "to_crlf", "retr_wire", "CLIENT_MESSAGES",
           "attachment_message", "attachment_body", "attachment_messages",
           "small_message", "small_messages"]
