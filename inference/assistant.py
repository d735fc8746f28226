"""`agpt assistant`: the chat endpoint of the review dashboard, and the pool-change announcer.

The dashboard never loads a model: it posts a verdict id and the dialogue to ``POST /chat``
and shows the streamed answer. The service loads the frame, its stored map and verdict, and
the product's pool from the database and answers with the profile's chat: ``GroundedChat``
(the CPU profiles: the stored verdict and evidence ground a small LM) or ``AnomalyGPTChat``
(``anomalygpt-7b``: the frame and the pool's few-shot map spliced into the LLM).

It also publishes pool changes: every change committed in the database leaves an
unannounced ``pool_changes`` row (the outbox); ``POST /pool/announce`` publishes them at once
(the dashboard calls it after "add to pool" and undo) and a background loop retries every few
seconds, so a change made while the broker was down is announced when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inference.model.interface import Detection
from inference.pool import announce_pending
from ingest.blobstore import BlobStore, BlobStoreError
from ingest.transport.base import Producer, TransportError
from storage import repositories
from storage.errors import VerdictNotFoundError

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
MAX_TURNS = 40
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class ChatRequestError(ValueError):
    """The chat request body is malformed (answered with 422)."""


@dataclass(frozen=True)
class ChatSubject:
    """What a chat about one verdict is grounded in, as stored in the database.

    Attributes:
        verdict_id: The verdict.
        product: Its product.
        image: The frame (None when the database keeps only its URI).
        detection: The stored verdict as a detection (map from the stored heatmap).
        pool_version: The product's pool version now.
    """

    verdict_id: int
    product: str
    image: Image.Image | None
    detection: Detection
    pool_version: int


class ChatEngine(Protocol):
    """Answers a question about a subject, streaming the text."""

    model_id: str

    def stream(self, subject: ChatSubject, turns: Sequence[tuple[str, str]],
               question: str) -> Iterator[str]:
        """Yield the answer to ``question`` after the earlier ``(question, answer)`` turns."""
        ...


def parse_chat_request(body: bytes) -> tuple[int, list[tuple[str, str]], str]:
    """Read ``{"verdict_id": int, "messages": [{"role", "text"}, ...]}``.

    The messages alternate user/assistant and end with the user's new question.

    Returns:
        ``(verdict_id, earlier (question, answer) turns, question)``.

    Raises:
        ChatRequestError: naming what is wrong.
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"body is not JSON: {exc}"
        raise ChatRequestError(msg) from exc
    if not isinstance(data, dict):
        msg = "body must be a JSON object"
        raise ChatRequestError(msg)
    verdict_id = data.get("verdict_id")
    messages = data.get("messages")
    if isinstance(verdict_id, bool) or not isinstance(verdict_id, int):
        msg = "verdict_id must be an integer"
        raise ChatRequestError(msg)
    if not isinstance(messages, list) or not messages or len(messages) > 2 * MAX_TURNS:
        msg = f"messages must be a list of 1-{2 * MAX_TURNS} messages"
        raise ChatRequestError(msg)
    texts: list[str] = []
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if not isinstance(message, dict) or message.get("role") != expected:
            msg = f"message {index} must have role {expected!r} (user and assistant alternate)"
            raise ChatRequestError(msg)
        text = message.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUESTION_CHARS:
            msg = f"message {index} needs a text of 1-{MAX_QUESTION_CHARS} characters"
            raise ChatRequestError(msg)
        texts.append(text.strip())
    if len(texts) % 2 == 0:
        msg = "the last message must be the user's question"
        raise ChatRequestError(msg)
    turns = list(zip(texts[0:-1:2], texts[1:-1:2], strict=True))
    return verdict_id, turns, texts[-1]


def load_subject(*, session: Session, verdict_id: int, image_size: int,
                 blobs: BlobStore | None = None) -> ChatSubject:
    """The verdict, frame and map behind a chat, read from the database.

    The frame comes from the blob store when the database keeps only its URI.

    Raises:
        VerdictNotFoundError: no such verdict.
    """
    detail = repositories.get_frame_detail(session=session, verdict_id=verdict_id)
    verdict, images = detail.verdict, detail.images
    data = images.image
    if data is None and images.image_uri is not None and blobs is not None:
        try:
            data = blobs.read(images.image_uri, max_bytes=MAX_IMAGE_BYTES)
        except BlobStoreError as exc:
            log.warning("frame of verdict %d not readable from the blob store: %s",
                        verdict_id, exc)
    image = _decode(data, "RGB")
    anomaly_map = np.zeros((image_size, image_size), dtype=np.float32)
    heat = _decode(images.heatmap_png, "L")
    if heat is not None and images.heatmap_min is not None and images.heatmap_max is not None:
        scale = (images.heatmap_max - images.heatmap_min) / 255.0
        anomaly_map = images.heatmap_min + np.asarray(heat, dtype=np.float32) * scale
    mask_image = _decode(images.mask_png, "L")
    mask = (np.asarray(mask_image) > 127 if mask_image is not None
            else np.zeros(anomaly_map.shape, dtype=bool))
    details = verdict.details
    detection = Detection(
        score=verdict.score, anomalous=verdict.anomalous, threshold=verdict.threshold,
        anomaly_map=anomaly_map, mask=mask, positions=list(verdict.positions),
        text=verdict.answer, local_score=float(details.get("local_score", verdict.score)),
        global_score=details.get("global_score"), probability=details.get("probability"))
    return ChatSubject(verdict_id, verdict.product, image, detection, detail.pool_version)


def _decode(data: bytes | None, mode: str) -> Image.Image | None:
    if data is None:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert(mode)
    except OSError:
        log.warning("a stored image cannot be decoded; chatting without it")
        return None


class Announcer:
    """Publishes unannounced pool changes: on request and every ``interval_s`` seconds."""

    def __init__(self, *, session_factory: sessionmaker[Session],
                 producer_factory: Callable[[], Producer] | None, topic: str,
                 interval_s: float = 5.0) -> None:
        """Announce on ``topic`` through a producer made by ``producer_factory`` on first use.

        Made on first use, so a broker that is down at start-up is retried; a None factory:
        no broker to announce to.
        """
        self.session_factory = session_factory
        self.producer_factory = producer_factory
        self.topic = topic
        self.interval_s = interval_s
        self.producer: Producer | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether there is a broker to announce to."""
        return self.producer_factory is not None

    def announce(self) -> dict[str, int]:
        """Publish what is pending now (one publisher at a time).

        Returns:
            The announced products and versions (empty without a broker).

        Raises:
            TransportError: the broker did not acknowledge (the changes stay pending).
        """
        if self.producer_factory is None:
            return {}
        with self._lock:
            if self.producer is None:
                self.producer = self.producer_factory()
            return announce_pending(session_factory=self.session_factory,
                                    producer=self.producer, topic=self.topic)

    def close(self) -> None:
        """Flush and close the producer, if one was made."""
        with self._lock:
            if self.producer is not None:
                self.producer.close()
                self.producer = None

    async def run(self) -> None:
        """Announce what is pending every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                announced = await run_in_threadpool(self.announce)
            except (TransportError, SQLAlchemyError) as exc:
                log.warning("pool changes not announced yet (retrying): %s", exc)
            else:
                if announced:
                    log.info("announced pool changes: %s", announced)


def build_app(*, session_factory: sessionmaker[Session], engine_factory: Callable[[], ChatEngine],
              announcer: Announcer, image_size: int, profile: str,
              blobs: BlobStore | None = None) -> Starlette:
    """The assistant's HTTP application.

    Args:
        session_factory: Database sessions.
        engine_factory: Builds the chat engine (called once, at start-up, off the event loop).
        announcer: Publishes pool changes.
        image_size: The profile's map size (for verdicts stored without a heatmap).
        profile: Model profile name, reported by ``/health``.
        blobs: Where frames kept by URI are read (None: inline images only).
    """
    state: dict[str, ChatEngine] = {}
    generation = threading.Lock()  # one answer at a time: the CPU is the bottleneck

    async def health(_request: Request) -> Response:
        ready = "engine" in state
        return JSONResponse({"status": "ok" if ready else "loading", "profile": profile,
                             "model": state["engine"].model_id if ready else None},
                            status_code=200 if ready else 503)

    async def chat(request: Request) -> Response:
        engine = state.get("engine")
        if engine is None:
            return JSONResponse({"error": "the model is still loading"}, status_code=503)
        try:
            verdict_id, turns, question = parse_chat_request(await request.body())
        except ChatRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)

        def load() -> ChatSubject:
            with session_factory() as session:
                return load_subject(session=session, verdict_id=verdict_id,
                                    image_size=image_size, blobs=blobs)

        try:
            subject = await run_in_threadpool(load)
        except VerdictNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except SQLAlchemyError as exc:
            log.warning("chat: database unavailable: %s", exc)
            return JSONResponse({"error": "database unavailable"}, status_code=503)

        def answer() -> Iterator[str]:
            with generation:
                try:
                    yield from engine.stream(subject, turns, question)
                except Exception:  # the status line is sent: end the stream with a note
                    log.exception("chat generation failed for verdict %d", verdict_id)
                    yield "\n[the assistant failed to answer; see its log]"

        return StreamingResponse(answer(), media_type="text/plain; charset=utf-8",
                                 headers={"X-Model": engine.model_id,
                                          "Cache-Control": "no-store"})

    async def announce(_request: Request) -> Response:
        try:
            announced = await run_in_threadpool(announcer.announce)
        except TransportError as exc:
            return JSONResponse({"error": f"broker unavailable, retrying: {exc}"},
                                status_code=503)
        except SQLAlchemyError as exc:
            return JSONResponse({"error": f"database unavailable: {exc}"}, status_code=503)
        return JSONResponse({"announced": announced, "broker": announcer.enabled})

    def load_engine() -> None:
        # A daemon thread: /health answers "loading" and announcements work meanwhile, and
        # a SIGTERM during a long first load (weight conversion) does not wait for it.
        try:
            state["engine"] = engine_factory()
        except Exception:
            log.exception("the chat model failed to load; /chat answers 503")
            return
        log.info("chat model ready: %s", state["engine"].model_id)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=load_engine, name="chat-model-load", daemon=True).start()
        task = asyncio.create_task(announcer.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/chat", chat, methods=["POST"]),
        Route("/pool/announce", announce, methods=["POST"]),
    ], lifespan=lifespan)
