"""AssistantClient against a small real HTTP server that streams chunked replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from review.assistant_client import AssistantClient, AssistantUnavailableError, Turn
from tests.fixtures.processes import free_port

# "é" split across two chunks checks the incremental UTF-8 decoding.
PIECES = [b"The defect ", b"is at the top left ", b"\xc3", b"\xa9dge."]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[dict[str, object]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.received.append(body)
        if body["verdict_id"] == 404:
            payload = b'{"detail": "no verdict 404"}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in PIECES:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A streaming server on a free port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_reply_streams_in_pieces_and_the_dialogue_is_sent(endpoint: str) -> None:
    client = AssistantClient(endpoint)
    turns = [Turn("user", "Is it bad?"), Turn("assistant", "Yes."), Turn("user", "Where?")]

    pieces = list(client.stream_reply(verdict_id=7, turns=turns))

    assert len(pieces) >= 3  # arrived piece by piece, not as one body
    assert "".join(pieces) == "The defect is at the top left édge."
    assert _Handler.received[-1] == {
        "verdict_id": 7,
        "messages": [{"role": "user", "text": "Is it bad?"},
                     {"role": "assistant", "text": "Yes."},
                     {"role": "user", "text": "Where?"}],
    }
    assert client.healthy()


def test_error_status_is_reported_with_its_detail(endpoint: str) -> None:
    client = AssistantClient(endpoint)

    with pytest.raises(AssistantUnavailableError, match="HTTP 404.*no verdict 404"):
        list(client.stream_reply(verdict_id=404, turns=[Turn("user", "?")]))


def test_nothing_listening_is_a_clear_error() -> None:
    client = AssistantClient(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2)

    assert not client.healthy()
    with pytest.raises(AssistantUnavailableError, match="not reachable"):
        list(client.stream_reply(verdict_id=1, turns=[Turn("user", "?")]))
