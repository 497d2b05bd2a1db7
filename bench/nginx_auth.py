#!/usr/bin/env python3
"""The auth_http responder for the benchmark's nginx mail proxy.

nginx asks it, once per login, where the user's mailbox lives; the answer
is always Dovecot's POP3 port on 127.0.0.1 (``--server-port``).  The
password is not checked here: nginx then logs in to Dovecot with USER and
PASS on the client's behalf, and Dovecot checks it, as it does for its own
POP3 and for popgate.  Nothing is logged, so the Auth-Pass header nginx
sends never lands anywhere.

One request per connection (nginx speaks HTTP/1.0 to auth_http and closes);
asyncio on one thread, with no HTTP framework, so the responder costs
nginx's logins as little as it can.

    python3 bench/nginx_auth.py --port 8081 --server-port 110
"""

from __future__ import annotations

import argparse
import asyncio
import signal


def answer(head: bytes, server_port: int) -> bytes:
    """OK with the backend for a pop3 login request; a refusal (which
    nginx passes on as -ERR) for anything else."""
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if (lines[0].startswith(b"GET ") and headers.get(b"auth-protocol") == b"pop3"
            and headers.get(b"auth-user")):
        return (b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\n"
                b"Auth-Port: %d\r\n\r\n" % server_port)
    return b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\nAuth-Wait: 0\r\n\r\n"


async def serve(port: int, server_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(answer(head, server_port))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    p.add_argument("--server-port", type=int, required=True, help="Dovecot's POP3 port")
    a = p.parse_args()
    asyncio.run(serve(a.port, a.server_port))


if __name__ == "__main__":
    main()
