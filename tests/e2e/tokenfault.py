"""A token endpoint in front of the real one (authserver.AuthServer) that
forwards, or fails the way a real one can: down (nothing listening), slow
(holds the request until released), or answering garbage. It records every
request body and answer, so a test can search popgate's log for the tokens
and secrets they held."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request

MODES = ("pass", "slow", "not_json", "no_token", "html_500", "huge", "reset")


class TokenFault:
    def __init__(self, upstream_token_url: str) -> None:
        self.upstream = upstream_token_url
        self.mode = "pass"
        self.release = threading.Event()
        self.seen: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.seen.append(body)
                mode = outer.mode
                if mode == "slow":
                    outer.release.wait(120)
                    return
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                status, ctype, answer = {
                    "not_json": (200, "application/json", b"<html>surprise</html>"),
                    "no_token": (200, "application/json", b'{"token_type":"Bearer"}'),
                    "html_500": (500, "text/html", b"<h1>Internal Server Error</h1>"),
                    "huge": (200, "application/json", b'{"access_token":"' + b"x" * 200_000 + b'"}'),
                }.get(mode, (0, "", b""))
                if mode == "pass":
                    req = urllib.request.Request(outer.upstream, data=body, method="POST",
                                                 headers={"content-type": self.headers["content-type"]})
                    try:
                        with urllib.request.urlopen(req, timeout=20) as r:
                            status, answer = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        status, answer = e.code, e.read()
                    ctype = "application/json"
                    outer.seen.append(answer)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def down(self) -> None:
        """Stops listening: connections are refused from now on."""
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        self.release.set()
        try:
            self.down()
        except OSError:
            pass

    def __enter__(self) -> "TokenFault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
