"""A small real HTTP server that streams chat replies like `agpt assistant` does.

The page tests use it to check what the dashboard sends and shows; the browser test runs the
real `agpt assistant`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY_PIECES = ["The ", "defect ", "is ", "in ", "the ", "top ", "left."]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._empty(200 if self.path == "/health" else 404)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/pool/announce":
            self.server.announcements += 1
            payload = json.dumps({"announced": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.server.requests.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in REPLY_PIECES:
            data = piece.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    requests: list[dict[str, object]]
    announcements: int


@contextmanager
def stub_assistant() -> Iterator[_Server]:
    """Serve on a free 127.0.0.1 port; ``server.requests`` holds the chat bodies received."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.announcements = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
