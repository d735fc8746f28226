"""Fuzzing a worker that writes to the real PostgreSQL: one outcome per message, always.

Hypothesis draws batches of hostile messages (``tests.ingest.hostile_messages``) and a worker
with the real CPU model, the real PostgreSQL and a blob store handles each batch. For every
message exactly one thing must come out: a verdict (with its frame row in the database) or a
dead letter with a reason code; the worker must never raise (an exit) nor take longer than a
bound for a batch (a stall); no open() may name anything outside the blob store (audited).

``make test`` runs a bounded number of batches; ``make fuzz`` (``AGPT_FUZZ_EXAMPLES``) a long
run. Both print the counts: messages, kinds, dead letters by reason, stalls, exits.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from inference.images import ImageLimits
from inference.metrics import WorkerMetrics
from inference.pool import add_references, load_product
from inference.worker import InferenceWorker, WorkerConfig
from ingest.blobstore import LocalBlobStore
from ingest.transport.memory import InProcessBroker
from storage.engine import make_engine, make_session_factory
from storage.models import Frame
from tests.ingest.hostile_messages import hostile_messages, make_places

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EXAMPLES = int(os.environ.get("AGPT_FUZZ_EXAMPLES", "40"))
STALL_S = 60.0  # one batch of at most 6 small frames on the CPU model
CONFIG = WorkerConfig(batch_size=8, batch_wait_ms=1, retry_initial_s=0.05, retry_max_s=0.2,
                      limits=ImageLimits(max_bytes=512 * 1024))
_OPENED: dict[str, list[str] | None] = {"paths": None}


def _audit(event: str, args: tuple) -> None:
    paths = _OPENED["paths"]
    if paths is not None and event == "open" and isinstance(args[0], str | bytes):
        paths.append(os.fsdecode(args[0]))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_message_ends_as_one_verdict_or_one_dead_letter(
    database_url, cpu_detector, textile_files, tmp_path
):
    factory = make_session_factory(make_engine(database_url))
    add_references(session_factory=factory, product="textile", added_by="fuzz",
                   images=[p.read_bytes() for p in textile_files["nominal"][:3]])
    cpu_detector._products.pop("textile", None)
    load_product(detector=cpu_detector, session_factory=factory, product="textile")
    buffer = io.BytesIO()
    Image.open(textile_files["nominal"][60]).resize((96, 96)).save(buffer, format="PNG")
    good = buffer.getvalue()
    places = make_places(tmp_path, good)
    broker = InProcessBroker()
    producer = broker.producer()
    worker = InferenceWorker(consumer=broker.consumer([CONFIG.frames_topic], group_id="fuzz"),
                             producer=producer, session_factory=factory, detector=cpu_detector,
                             config=CONFIG, metrics=WorkerMetrics(CollectorRegistry()),
                             blob_store=LocalBlobStore(places.store))
    if not getattr(sys, "_agpt_fuzz_audit", False):
        sys.addaudithook(_audit)  # permanent; records only while ``_OPENED`` holds a list
        sys._agpt_fuzz_audit = True
    stats = {"messages": 0, "batches": 0, "stalls": 0, "exits": 0, "verdicts": 0}
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    problems: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(hostile_messages(places, good), min_size=1, max_size=6))
    def check(batch):
        stats["batches"] += 1
        start = {t: broker.end_offset(t) for t in (CONFIG.verdicts_topic, CONFIG.dlq_topic)}
        for index, message in enumerate(batch):
            producer.send(CONFIG.frames_topic, key=f"m{index}".encode(), value=message.value)
            kinds[message.kind] += 1
        stats["messages"] += len(batch)
        outcome: list[object] = []
        _OPENED["paths"] = []

        def step() -> None:
            try:
                consumed = 0
                while consumed < len(batch):
                    result = worker.step()
                    consumed += result.consumed if result else 0
                outcome.append(consumed)
            except BaseException as exc:  # an exit of the real process
                outcome.append(exc)

        thread = threading.Thread(target=step, daemon=True)
        thread.start()
        thread.join(STALL_S)
        opened, _OPENED["paths"] = _OPENED["paths"], None
        if thread.is_alive():
            stats["stalls"] += 1
            problems.append(f"stall on kinds {[m.kind for m in batch]}")
            pytest.fail(f"worker stalled on {batch!r}")
        if isinstance(outcome[0], BaseException):
            stats["exits"] += 1
            problems.append(repr(outcome[0]))
            raise outcome[0]
        leaks = [p for p in opened if any(p.startswith(f) for f in places.forbidden())]
        assert leaks == [], leaks
        verdicts = broker.read(CONFIG.verdicts_topic, start[CONFIG.verdicts_topic], 100)
        dead = broker.read(CONFIG.dlq_topic, start[CONFIG.dlq_topic], 100)
        # Exactly one outcome per message: the keys m0..mN each once over both topics.
        dead_keys = [r.key for r in dead]
        assert len(verdicts) + len(dead) == len(batch)
        for record in dead:
            headers = dict(record.headers)
            reason = headers["reason"].decode()
            assert reason, headers
            assert reason != "undecodable", headers  # a check nobody wrote
            reasons[reason] += 1
        stats["verdicts"] += len(verdicts)
        assert len(set(dead_keys)) == len(dead_keys)
        with factory() as session:
            for record in verdicts:
                body = json.loads(record.value)
                row = session.scalar(select(Frame.id).where(
                    Frame.camera_id == body["camera_id"], Frame.frame_id == body["frame_id"]))
                assert row is not None, body

    try:
        check()
    finally:
        report = (f"\nworker fuzz: {stats['messages']} messages in {stats['batches']} batches, "
              f"{stats['verdicts']} verdicts, dead letters by reason {dict(reasons)}, "
              f"kinds {dict(kinds)}, stalls {stats['stalls']}, exits {stats['exits']}"
              + (f", problems {problems[:3]}" if problems else ""))
        print(report)  # noqa: T201 - the fuzz counts, shown with -s
    assert stats["stalls"] == 0
    assert stats["exits"] == 0
    assert stats["verdicts"] > 0
