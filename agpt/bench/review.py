"""`agpt bench review`: the dashboard's Queue render and the chat's first token.

The Queue page's first render at 10^5 verdicts in PostgreSQL, and chat first-token latency
through the assistant endpoint.

Side by side in one run (the machine is shared and noisy): the Queue render at a small table
(10^3 verdicts) and at the full size in the same database, with the queue's three queries
alone; the endpoint's first token beside the same model answering in process (the path
`agpt chat` takes), so the HTTP service's own cost reads as a difference.
"""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.engine import make_url

from agpt.settings import Settings

REVIEW_APP = Path(__file__).resolve().parents[2] / "review" / "app.py"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUESTIONS = (
    "Where exactly is the defect?",
    "Should this part continue down the line?",
    "How sure is the inspection about this?",
    "What kind of defect could this be?",
    "What should the operator do now?",
)
BENCH_USER = "bench-operator"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _blobs() -> tuple[bytes, bytes, bytes]:
    """A 224-px frame, its mask and a heatmap, as the worker stores them."""
    ramp = np.linspace(90, 160, 224, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(224, 0), ramp[:, None].repeat(224, 1),
                      np.full((224, 224), 120.0, dtype=np.float32)], axis=-1).astype(np.uint8)
    mask = np.zeros((224, 224), dtype=np.uint8)
    mask[20:60, 30:80] = 255
    heat = np.zeros((224, 224), dtype=np.uint8)
    heat[10:70, 20:90] = 200
    return _png(image), _png(mask), _png(heat)


def fill(url: str, *, total: int, prefix: str) -> float:
    """Insert ``total`` verdicts (10 % flagged with image, mask, heatmap); returns seconds."""
    from storage.bulk import insert_synthetic_verdicts
    from storage.engine import make_engine, make_session_factory
    from storage.scratch import analyze

    image, mask, heat = _blobs()
    engine = make_engine(url)
    started = time.perf_counter()
    with make_session_factory(engine).begin() as session:
        insert_synthetic_verdicts(session=session, count=total, image_png=image, mask_png=mask,
                                  heatmap_png=heat, prefix=prefix)
    seconds = time.perf_counter() - started
    engine.dispose()
    analyze(url)
    return seconds


def queue_render(url: str, *, repeats: int) -> dict[str, float]:
    """Seconds of the Queue page under AppTest, and of the queue's queries alone.

    The first render runs with cold caches and a new engine, then the median of ``repeats``
    renders of new sessions.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from storage import repositories as repo
    from storage.engine import make_engine, make_session_factory

    os.environ["AGPT_DATABASE_URL"] = url
    os.environ["AGPT_ASSISTANT_URL"] = "http://127.0.0.1:9"  # chat is measured separately
    st.cache_data.clear()
    st.cache_resource.clear()

    def render() -> float:
        test = AppTest.from_file(str(REVIEW_APP), default_timeout=120)
        test.session_state["agpt_user"] = {"name": BENCH_USER, "role": "operator",
                                           "oidc": False}
        started = time.perf_counter()
        test.run()
        seconds = time.perf_counter() - started
        if test.exception:
            msg = f"the Queue page failed: {test.exception[0].value}"
            raise RuntimeError(msg)
        if not test.title or test.title[0].value != "Queue":
            msg = "the dashboard did not open on the Queue page"
            raise RuntimeError(msg)
        return seconds

    first = render()
    warm = statistics.median(render() for _ in range(repeats))
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    query_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with sessions() as session:
            page = repo.list_queue(session=session, limit=25)
            repo.count_queue(session=session)
            repo.count_unreviewed(session=session)
            repo.queue_images(session=session, verdict_ids=[v.id for v in page])
        query_times.append(time.perf_counter() - started)
    engine.dispose()
    return {"first_render_s": round(first, 3), "warm_render_median_s": round(warm, 3),
            "queue_queries_median_s": round(statistics.median(query_times), 4)}


def chat_latency(url: str, settings: Settings, *, questions: int) -> dict[str, object]:
    """First-token and total seconds per question through ``POST /chat`` and in process."""
    import uvicorn

    from inference.assistant import Announcer, build_app, load_subject
    from inference.chat import GroundedChat, resume_conversation
    from inference.chat_engines import GroundedEngine
    from inference.model.anomalygpt.conversation import query_text
    from inference.model.weights.smollm import load_smollm2
    from storage import repositories as repo
    from storage.engine import make_engine, make_session_factory

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        verdict_id = repo.list_queue(session=session, limit=1)[0].id
        subject = load_subject(session=session, verdict_id=verdict_id, image_size=224)
    started = time.perf_counter()
    lm, tokenizer = load_smollm2(settings.cache_dir)
    load_s = time.perf_counter() - started
    asked = [QUESTIONS[i % len(QUESTIONS)] for i in range(questions)]

    in_process = []
    for question in asked:
        chat = GroundedChat(lm, tokenizer, product=subject.product,
                            detection=subject.detection)
        chat.conversation = resume_conversation(query_text(subject.product),
                                                subject.detection, [])
        in_process.append(_timed(chat.stream(question)))

    app = build_app(session_factory=sessions,
                    engine_factory=lambda: GroundedEngine(lm, tokenizer, model_id="bench"),
                    announcer=Announcer(session_factory=sessions, producer_factory=None,
                                        topic="unused"),
                    image_size=224, profile=settings.profile)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            if time.monotonic() > deadline:
                msg = "the assistant did not become ready"
                raise RuntimeError(msg)
            time.sleep(0.05)
        endpoint = [_timed(_post_chat(port, verdict_id, q)) for q in asked]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()

    def summary(runs: list[tuple[float, float, int]]) -> dict[str, float]:
        firsts = [first for first, _, _ in runs]
        return {"first_token_median_s": round(statistics.median(firsts), 3),
                "first_token_max_s": round(max(firsts), 3),
                "answer_median_s": round(statistics.median(t for _, t, _ in runs), 3),
                "chunks_median": statistics.median(n for _, _, n in runs)}

    through, direct = summary(endpoint), summary(in_process)
    return {"questions": questions, "model_load_s": round(load_s, 2),
            "endpoint": through, "in_process": direct,
            "endpoint_over_in_process_first_token": round(
                through["first_token_median_s"] / max(1e-9, direct["first_token_median_s"]), 2),
            "target_first_token_s": 2.0,
            "meets_target": through["first_token_median_s"] < 2.0}


def _timed(pieces: Iterator[str] | Iterator[bytes]) -> tuple[float, float, int]:
    """(seconds to the first non-empty piece, seconds to the end, pieces)."""
    started = time.perf_counter()
    first = None
    count = 0
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - started
        count += 1
    total = time.perf_counter() - started
    return (first if first is not None else total), total, count


def _post_chat(port: int, verdict_id: int, question: str) -> Iterator[bytes]:
    body = json.dumps({"verdict_id": verdict_id,
                       "messages": [{"role": "user", "text": question}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/chat", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        while chunk := response.read1(65536):
            yield chunk


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read())["status"] == "ok"
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_review(settings: Settings, *, verdicts: int, small: int, repeats: int,
                 questions: int, admin_url: str | None, keep: bool) -> dict[str, object]:
    """The whole benchmark; returns a JSON-ready report.

    Args:
        settings: Service settings (model cache, torch threads, profile).
        verdicts: Verdicts in the database for the main Queue measurement (10^5).
        small: Verdicts of the side-by-side small-table measurement (10^3).
        repeats: Warm renders and query repetitions.
        questions: Chat questions asked through each path.
        admin_url: PostgreSQL URL allowed to create databases.
        keep: Keep the benchmark database.
    """
    from agpt import wiring
    from storage import repositories as repo
    from storage.engine import make_engine, make_session_factory
    from storage.scratch import scratch_database

    if settings.torch_threads is None:  # as `agpt bench stream`: all cores but one
        settings = settings.model_copy(update={"torch_threads": max(1, (os.cpu_count() or 2) - 1)})
    wiring.configure_torch(settings)
    admin = admin_url or (settings.database_url if settings.database_url.startswith(
        "postgresql") else DEFAULT_ADMIN_URL)
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # AppTest outside a server
    report: dict[str, object] = {"verdicts": verdicts, "flagged_share": 0.1,
                                 "load_average_1m_at_start": round(os.getloadavg()[0], 2),
                                 "cpus": os.cpu_count(),
                                 "torch_threads": settings.torch_threads}
    with scratch_database(admin, prefix="agpt_bench_review", keep=keep) as url:
        engine = make_engine(url)
        with make_session_factory(engine).begin() as session:
            repo.create_user(session=session, name=BENCH_USER, password="bench-password",
                             role="operator", created_by="bench")
        engine.dispose()
        fill(url, total=small, prefix="small-")
        report[f"queue_at_{small}"] = queue_render(url, repeats=repeats)
        report["insert_s"] = round(fill(url, total=verdicts - small, prefix="bulk-"), 2)
        report[f"queue_at_{verdicts}"] = big = queue_render(url, repeats=repeats)
        small_first = report[f"queue_at_{small}"]["first_render_s"]  # type: ignore[index]
        report["first_render_ratio_big_over_small"] = round(
            big["first_render_s"] / max(1e-9, small_first), 2)
        report["chat"] = chat_latency(url, settings, questions=questions)
        report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        if keep:
            report["database_url"] = make_url(url).render_as_string(hide_password=True)
    return report
