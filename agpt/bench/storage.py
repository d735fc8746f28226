"""`agpt bench storage`: the database at 10^5, 10^6 and 10^7 verdicts.

One scratch PostgreSQL database per size is created, migrated to head (the real indexes),
and filled in time order with set-based ``generate_series`` inserts (no images: the blob
store holds them) at a year-on-a-line rate (10^7 verdicts a year, ~3 % flagged, 12 cameras,
4 products, flagged frames older than two days reviewed). The run measures what production
does:
the worker's ``record_verdicts`` in batches of 8 (rows/s) and the dashboard's repository
calls (queue first page, queue unreviewed, queue with every filter, a keyset page at a random
depth, the queue page's counts — matching and unreviewed, both stopping at 10,000 —, one frame
of the last day and one of any age with its audit log and chat, the 24 h overview: hourly
rates per camera and product, backlog, review counts of the window), p50/p95 over many
calls with varied arguments, interleaved across the sizes so each figure sees the same
moments of the shared machine's load. The report puts the largest size beside the smallest
(ratios in one run). The databases are dropped at the end.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import make_engine, make_session_factory
from storage.repositories import (
    QueueCursor,
    QueueFilter,
    VerdictRecord,
    count_queue,
    count_unreviewed,
    get_frame_detail,
    list_queue,
    rate_series,
    record_verdicts,
    review_counts,
)
from storage.scratch import scratch_database
from storage.synthetic import (
    SyntheticLine,
    delete_frames_named,
    fill_line,
    table_sizes_mb,
)

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
LINE = SyntheticLine()  # 10^7 verdicts a year from 2025-01-01, 12 cameras, 4 products
STEP_S = LINE.step_s
CAMERAS = LINE.cameras
PRODUCTS = LINE.products
T0 = LINE.t0
PAGE = 50

def _record_batch(sessions: sessionmaker[Session], first_index: int, newest: datetime,
                  batch_size: int) -> float:
    """Seconds of one worker write: ``record_verdicts`` of a batch + commit."""
    records = [_record(first_index + k, newest) for k in range(batch_size)]
    started = time.perf_counter()
    with sessions.begin() as session:
        record_verdicts(session=session, records=records)
    return time.perf_counter() - started


def query_cases(*, rows: int, rng: random.Random) -> dict[str, Callable[[Session], object]]:
    """The dashboard's calls on a database of ``rows`` verdicts, arguments drawn from ``rng``."""
    newest = T0 + timedelta(seconds=rows * STEP_S)

    def camera() -> str:
        return f"cam-{rng.randrange(CAMERAS):02d}"

    def filtered(session: Session) -> object:
        cam = rng.randrange(CAMERAS)
        low = rng.choice((0.6, 0.7, 0.8))
        filters = QueueFilter(cameras=(f"cam-{cam:02d}",), products=(f"product-{cam % PRODUCTS}",),
                              since=newest - timedelta(days=7), score_min=low,
                              score_max=low + 0.2,
                              review=rng.choice(("all", "unreviewed", "reviewed")))
        return list_queue(session=session, filters=filters, limit=PAGE)

    def deep_page(session: Session) -> object:
        at = rng.randrange(1, rows)
        cursor = QueueCursor(T0 + timedelta(seconds=at * STEP_S), at)
        return list_queue(session=session, filters=QueueFilter(cameras=(camera(),)),
                          after=cursor, limit=PAGE)

    def counts(session: Session) -> object:  # the queue page's two counts (capped)
        filters = rng.choice((QueueFilter(), QueueFilter(review="unreviewed"),
                              QueueFilter(cameras=(camera(),))))
        return (count_queue(session=session, filters=filters),
                count_unreviewed(session=session))

    def overview(session: Session) -> object:
        since = newest - timedelta(hours=24)
        return (rate_series(session=session, since=since, bucket_s=3600),
                count_unreviewed(session=session), review_counts(session=session, since=since))

    def recent_frame(session: Session) -> object:  # what a reviewer opens from the queue
        return get_frame_detail(session=session,
                                verdict_id=max(1, rows - rng.randrange(int(86400 / STEP_S))))

    return {
        "queue_first_page": lambda s: list_queue(session=s, limit=PAGE),
        "queue_unreviewed": lambda s: list_queue(
            session=s, filters=QueueFilter(review="unreviewed"), limit=PAGE),
        "queue_filtered": filtered,
        "queue_keyset_random_depth": deep_page,
        "queue_counts": counts,
        "frame_recent": recent_frame,
        "frame_any_age": lambda s: get_frame_detail(session=s,
                                                    verdict_id=rng.randrange(1, rows)),
        "overview_24h": overview,
    }


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2)}


def bench_storage(*, admin_url: str = DEFAULT_ADMIN_URL,
                  sizes: tuple[int, ...] = DEFAULT_SIZES, calls: int = 100,
                  insert_batches: int = 150, batch_size: int = 8) -> dict[str, Any]:
    """One scratch database per size, then every measurement interleaved across them.

    The machine is shared: measuring the sizes one after another would compare different
    moments of its load. Here each round runs one write batch (then one call of each query)
    on every database in turn, so the sizes see the same moments and their ratios hold.

    Returns:
        A JSON-ready report, per size and the largest over the smallest.
    """
    started = time.perf_counter()
    ordered = sorted(sizes)
    with ExitStack() as stack:
        engines: list[Engine] = []
        bulk: list[float] = []
        for size in ordered:
            url = stack.enter_context(scratch_database(admin_url, prefix="agpt_bench_storage"))
            engine = make_engine(url)
            stack.callback(engine.dispose)
            started_fill = time.perf_counter()
            fill_line(engine=engine, line=LINE, rows=size)
            bulk.append(size / (time.perf_counter() - started_fill))
            engines.append(engine)
        sessions = [make_session_factory(engine) for engine in engines]
        write_s: list[list[float]] = [[] for _ in engines]
        for b in range(insert_batches):
            for i, size in enumerate(ordered):
                newest = T0 + timedelta(seconds=size * STEP_S)
                write_s[i].append(_record_batch(sessions[i], size + 1 + b * batch_size, newest,
                                                batch_size))
        for factory in sessions:  # live rows are newer than the bulk: not in the queue figures
            with factory.begin() as session:
                delete_frames_named(session=session, prefix="live-")
        rngs = [random.Random(7) for _ in engines]  # the same argument draws on every size
        cases = [query_cases(rows=size, rng=rng) for size, rng in zip(ordered, rngs, strict=True)]
        times: list[dict[str, list[float]]] = [{name: [] for name in c} for c in cases]
        for call in range(calls + 3):
            for name in cases[0]:
                for i in range(len(engines)):
                    with sessions[i]() as session:
                        began = time.perf_counter()
                        cases[i][name](session)
                        elapsed = time.perf_counter() - began
                    if call >= 3:  # the first calls warm caches and the plan cache
                        times[i][name].append(elapsed)
        results = [{
            "verdicts": size,
            "bulk_rows_per_s": round(bulk[i]),
            "record_verdicts_rows_per_s": round(
                insert_batches * batch_size / sum(write_s[i]), 1),
            "record_verdicts_batch": _percentiles(write_s[i]),
            "queries": {name: _percentiles(t) for name, t in times[i].items()},
            **table_sizes_mb(engine=engines[i]),
        } for i, size in enumerate(ordered)]
    return {"sizes": results, "ratios_largest_over_smallest": _ratios(results),
            "wall_s": round(time.perf_counter() - started, 1)}


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    if len(results) < 2:
        return {}
    small, large = results[0], results[-1]
    ratios = {"record_verdicts_rows_per_s": round(
        large["record_verdicts_rows_per_s"] / small["record_verdicts_rows_per_s"], 3),
        "record_verdicts_batch_p95": round(large["record_verdicts_batch"]["p95_ms"]
                                           / small["record_verdicts_batch"]["p95_ms"], 3)}
    for name, figures in large["queries"].items():
        ratios[f"{name}_p95"] = round(
            figures["p95_ms"] / max(small["queries"][name]["p95_ms"], 1e-3), 3)
    return ratios


def _record(index: int, newest: datetime) -> VerdictRecord:
    anomalous = index % 33 == 0
    return VerdictRecord(
        camera_id=f"cam-{index % CAMERAS:02d}", frame_id=f"live-{index}",
        product=f"product-{index % CAMERAS % PRODUCTS}", captured_at=newest, image=None,
        image_uri=None, metadata={"line": index % 3}, score=0.9 if anomalous else 0.1,
        threshold=0.5, anomalous=anomalous, positions=["top left"] if anomalous else [],
        answer="Yes." if anomalous else "No.", mask_png=None, model_id="bench",
        latency_ms=40.0, worker="bench-0",
    )
