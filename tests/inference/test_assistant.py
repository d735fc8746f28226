"""`agpt assistant`'s HTTP service: streamed chat about a stored verdict, pool announcements."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette

from inference.assistant import Announcer, ChatRequestError, build_app, parse_chat_request
from inference.chat import until_separator
from inference.chat_engines import GroundedEngine
from ingest.pool_events import PoolEvent
from ingest.transport.base import TransportError
from ingest.transport.kafka import KafkaConfig, KafkaTransport
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from storage.repositories import (
    create_user,
    list_verdicts,
    pool_add,
    record_verdicts,
    unannounced_pool_changes,
)
from tests.fixtures.processes import free_port
from tests.storage.factories import make_record, png_bytes


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run ``app`` on a free port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "assistant did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post(url: str, body: object | None = None) -> tuple[int, bytes, list[bytes]]:
    """POST JSON; returns status, whole body and the chunks as they arrived."""
    data = b"" if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            chunks = []
            while chunk := response.read1(65536):
                chunks.append(chunk)
            return response.status, b"".join(chunks), chunks
    except urllib.error.HTTPError as error:
        return error.code, error.read(), []


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                if json.loads(response.read())["status"] == "ok":
                    return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("the chat model did not load in 120 s")


@pytest.fixture
def sessions(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'assistant.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


class UnusedEngine:
    """The announce tests never chat; a real model would only cost start-up time."""

    model_id = "unused"

    def stream(self, subject, turns, question):  # noqa: D102
        msg = "not called"
        raise AssertionError(msg)


def test_chat_requests_are_validated() -> None:
    verdict, turns, question = parse_chat_request(json.dumps({"verdict_id": 3, "messages": [
        {"role": "user", "text": "Where?"}, {"role": "assistant", "text": "Top left."},
        {"role": "user", "text": " Why? "}]}).encode())
    assert (verdict, turns, question) == (3, [("Where?", "Top left.")], "Why?")
    for body in (b"not json", b"[]", b'{"verdict_id": "3", "messages": []}',
                 b'{"verdict_id": 3, "messages": [{"role": "assistant", "text": "x"}]}',
                 b'{"verdict_id": 3, "messages": [{"role": "user", "text": ""}]}',
                 json.dumps({"verdict_id": 3, "messages": [
                     {"role": "user", "text": "a"}, {"role": "assistant", "text": "b"}]}).encode(),
                 json.dumps({"verdict_id": 3, "messages": [
                     {"role": "user", "text": "x" * 5000}]}).encode()):
        with pytest.raises(ChatRequestError):
            parse_chat_request(body)


def test_streamed_text_stops_before_the_turn_separator() -> None:
    assert "".join(until_separator(["The part", " is fine.#", "## Human: next"])) == \
        "The part is fine."
    assert list(until_separator(["a#", "b"])) == ["a", "#b"]
    assert "".join(until_separator(["no separator at all"])) == "no separator at all"


@pytest.mark.slow
def test_chat_streams_an_answer_about_the_stored_verdict(sessions, smollm2) -> None:
    with sessions.begin() as session:
        record_verdicts(session=session, records=[make_record(1)])
        verdict_id = list_verdicts(session=session)[0].id
    lm, tokenizer = smollm2
    app = build_app(
        session_factory=sessions,
        engine_factory=lambda: GroundedEngine(lm, tokenizer, model_id="smollm2-test",
                                              max_new_tokens=24),
        announcer=Announcer(session_factory=sessions, producer_factory=None,
                            topic="unused"),
        image_size=224, profile="cpu-small")
    with serving(app) as base:
        wait_ready(base)
        status, body, chunks = post(f"{base}/chat", {"verdict_id": verdict_id, "messages": [
            {"role": "user", "text": "Is there a defect?"},
            {"role": "assistant", "text": "Yes, in the top left."},
            {"role": "user", "text": "Should this part continue down the line?"}]})
        assert status == 200
        assert body.decode().strip()
        assert len(chunks) > 1  # token by token, not one block at the end
        assert post(f"{base}/chat", {"verdict_id": verdict_id + 100, "messages": [
            {"role": "user", "text": "?"}]})[0] == 404
        assert post(f"{base}/chat", {"verdict_id": verdict_id})[0] == 422


@pytest.mark.kafka
def test_announce_publishes_committed_pool_changes(sessions, kafka_config: KafkaConfig,
                                                   make_topic) -> None:
    topic = make_topic()
    transport = KafkaTransport(kafka_config)
    with sessions.begin() as session:
        create_user(session=session, name="ed", password="engineer-pw", role="engineer")
        pool_add(session=session, user="ed", product="bottle", image=png_bytes())
        pool_add(session=session, user="ed", product="bottle", image=png_bytes((1, 2, 3)))
    announcer = Announcer(session_factory=sessions, producer_factory=transport.producer,
                          topic=topic, interval_s=3600)
    app = build_app(session_factory=sessions, engine_factory=UnusedEngine,
                    announcer=announcer, image_size=224, profile="cpu-small")
    try:
        with serving(app) as base:
            status, body, _ = post(f"{base}/pool/announce")
            assert status == 200
            assert json.loads(body)["announced"] == {"bottle": 2}
            assert post(f"{base}/pool/announce")[1] == b'{"announced":{},"broker":true}'
    finally:
        announcer.close()
    with sessions() as session:
        assert unannounced_pool_changes(session=session) == []
    reader = transport.broadcast_consumer([topic])
    try:
        events, deadline = [], time.monotonic() + 20
        while not events and time.monotonic() < deadline:
            events = [PoolEvent.decode(r.value) for r in reader.poll(max_records=10,
                                                                      timeout_s=1.0)]
    finally:
        reader.close()
    assert [(e.product, e.pool_version) for e in events] == [("bottle", 2)]


def test_a_broker_outage_keeps_changes_pending(sessions) -> None:
    with sessions.begin() as session:
        create_user(session=session, name="ed", password="engineer-pw", role="engineer")
        pool_add(session=session, user="ed", product="bottle", image=png_bytes())

    def unreachable():
        msg = "broker down"
        raise TransportError(msg)

    announcer = Announcer(session_factory=sessions, producer_factory=unreachable,
                          topic="agpt.pool", interval_s=3600)
    app = build_app(session_factory=sessions, engine_factory=UnusedEngine,
                    announcer=announcer, image_size=224, profile="cpu-small")
    with serving(app) as base:
        status, body, _ = post(f"{base}/pool/announce")
    assert status == 503
    assert b"broker down" in body
    with sessions() as session:
        assert len(unannounced_pool_changes(session=session)) == 1


def test_the_subject_reads_a_blob_stored_frame(sessions, tmp_path: Path) -> None:
    from dataclasses import replace

    from inference.assistant import load_subject
    from ingest.blobstore import open_blob_store

    store = open_blob_store(str(tmp_path / "blobs"))
    uri = store.put(png_bytes((10, 200, 30), size=16))
    with sessions.begin() as session:
        record_verdicts(session=session, records=[replace(make_record(1), image=None,
                                                          image_uri=uri)])
        verdict_id = list_verdicts(session=session)[0].id
    with sessions() as session:
        with_store = load_subject(session=session, verdict_id=verdict_id, image_size=224,
                                  blobs=store)
        without = load_subject(session=session, verdict_id=verdict_id, image_size=224)
    assert with_store.image is not None
    assert with_store.image.getpixel((0, 0)) == (10, 200, 30)
    assert without.image is None
