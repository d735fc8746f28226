"""Talk to the `agpt assistant` chat endpoint over plain HTTP (no torch in the dashboard).

The endpoint (``AGPT_ASSISTANT_URL``) answers ``POST /chat`` with the reply's text streamed as
it is generated (chunked ``text/plain``); this client yields the pieces as they arrive, so
``st.write_stream`` shows them token by token.
"""

from __future__ import annotations

import codecs
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ASSISTANT_URL_ENV = "AGPT_ASSISTANT_URL"
DEFAULT_ASSISTANT_URL = "http://127.0.0.1:8502"


class AssistantUnavailableError(RuntimeError):
    """The assistant could not be reached or refused the request; the message says which."""


@dataclass(frozen=True)
class Turn:
    """One message of the dialogue sent to the assistant."""

    role: str  # "user" or "assistant"
    text: str


class AssistantClient:
    """A client of one assistant endpoint.

    Args:
        base_url: Endpoint root, e.g. ``http://127.0.0.1:8502``.
        connect_timeout_s: Longest wait for the connection and for each piece of the reply.
    """

    def __init__(self, base_url: str, *, connect_timeout_s: float = 30.0) -> None:
        """Remember the endpoint; nothing is contacted until a call."""
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """True when ``GET /health`` answers 200 within ``timeout_s``."""
        return self.state(timeout_s) == "ready"

    def state(self, timeout_s: float = 1.0) -> str:
        """``"ready"`` (200), ``"loading"`` (503: the model is still loading) or ``"down"``."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout_s) as reply:
                return "ready" if reply.status == 200 else "down"
        except urllib.error.HTTPError as exc:
            return "loading" if exc.code == 503 else "down"
        except (urllib.error.URLError, OSError, ValueError):
            return "down"

    def stream_reply(self, *, verdict_id: int, turns: Sequence[Turn]) -> Iterator[str]:
        """Send the dialogue about one verdict and yield the reply's text as it streams.

        Args:
            verdict_id: The verdict (frame) the chat is about.
            turns: The whole dialogue so far, oldest first, ending with the user's question.

        Yields:
            Non-empty pieces of the reply, in order.

        Raises:
            AssistantUnavailableError: nothing listens, the connection broke, a piece took
                longer than ``connect_timeout_s``, or the endpoint answered an error.
        """
        body = json.dumps({
            "verdict_id": verdict_id,
            "messages": [{"role": turn.role, "text": turn.text} for turn in turns],
        }).encode()
        request = urllib.request.Request(
            f"{self.base_url}/chat", data=body, method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/plain"},
        )
        try:
            reply = urllib.request.urlopen(request, timeout=self.connect_timeout_s)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace").strip()
            msg = f"the assistant refused the question (HTTP {exc.code}): {detail}"
            raise AssistantUnavailableError(msg) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            msg = f"the assistant at {self.base_url} is not reachable ({reason})"
            raise AssistantUnavailableError(msg) from exc
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with reply:
            while True:
                try:
                    chunk = reply.read1(4096)
                except (OSError, http.client.HTTPException) as exc:
                    msg = f"the assistant stopped answering mid-reply ({exc})"
                    raise AssistantUnavailableError(msg) from exc
                if not chunk:
                    break
                text = decoder.decode(chunk)
                if text:
                    yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


def announce_pool_changes(base_url: str, timeout_s: float = 5.0) -> dict[str, int]:
    """Ask the assistant service to publish committed pool changes on the pool topic now.

    Args:
        base_url: The assistant endpoint root.
        timeout_s: Longest wait for the answer.

    Returns:
        ``{product: version}`` of what was announced.

    Raises:
        AssistantUnavailableError: the service is down or the broker refused; the change
            stays queued in the database and the service announces it when it can.
    """
    request = urllib.request.Request(f"{base_url.rstrip('/')}/pool/announce", data=b"",
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body = json.loads(reply.read(100_000) or b"{}")
    except urllib.error.HTTPError as exc:
        msg = f"the pool announcement was refused (HTTP {exc.code})"
        raise AssistantUnavailableError(msg) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        msg = f"the assistant at {base_url} did not take the pool announcement ({exc})"
        raise AssistantUnavailableError(msg) from exc
    announced = body.get("announced", {}) if isinstance(body, dict) else {}
    return {str(k): int(v) for k, v in announced.items()} if isinstance(announced, dict) else {}


def assistant_url() -> str:
    """The assistant endpoint the dashboard uses (``AGPT_ASSISTANT_URL``)."""
    return os.environ.get(ASSISTANT_URL_ENV, DEFAULT_ASSISTANT_URL)
