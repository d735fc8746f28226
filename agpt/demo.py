"""`agpt demo`: a small textile line on embedded defaults, end to end.

Frames of real textile images (the `conformal-clip-data` wheel: nominal, local and global
defects) go through the in-process transport to a worker, whose verdicts land in SQLite; the
review dashboard then shows the flagged frames with their masks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from agpt.settings import Settings
from inference.metrics import WorkerMetrics
from inference.model.fewshot.fewshot_detector import FewShotDetector
from inference.pool import add_references, load_product
from inference.worker import InferenceWorker, WorkerConfig
from ingest.sources import frames_from_files, image_files
from ingest.transport.memory import InProcessBroker
from storage import repositories

PRODUCT = "textile"
PROFILE = "cpu-small-448"


@dataclass(frozen=True)
class DemoPlan:
    """Which files seed the pool and which stream through the line."""

    pool: list[Path]
    stream: list[tuple[Path, str]]  # (file, ground-truth kind: nominal/local/global)


def plan_line(*, frames: int, shots: int, seed: int = 0) -> DemoPlan:
    """Pick pool and stream files from the textile wheel (75 % nominal, 25 % defective).

    The pool is a random sample of the nominal images, as an operator would collect normals
    over a shift; the first files of the set are consecutive and unusually alike.
    """
    import conformal_clip_data as data

    nominal = image_files(data.nominal_dir())
    local = image_files(data.local_dir())
    glob = image_files(data.global_dir())
    rng = random.Random(seed)
    pool = sorted(rng.sample(nominal, shots))
    rest = [p for p in nominal if p not in set(pool)]
    n_defect = frames // 4
    stream = (
        [(p, "nominal") for p in rng.sample(rest, frames - n_defect)]
        + [(p, "local") for p in rng.sample(local, n_defect - n_defect // 2)]
        + [(p, "global") for p in rng.sample(glob, n_defect // 2)]
    )
    rng.shuffle(stream)
    return DemoPlan(pool=pool, stream=stream)


def seed_pool(session_factory: sessionmaker[Session], paths: list[Path]) -> None:
    """Add ``paths`` to the demo product's pool."""
    add_references(session_factory=session_factory, product=PRODUCT, source="seed",
                   added_by="agpt demo", images=[path.read_bytes() for path in paths])


def run_line(*, detector: FewShotDetector, session_factory: sessionmaker[Session],
             plan: DemoPlan, config: WorkerConfig, out: TextIO | None = None) -> dict[str, object]:
    """Stream the plan through an in-process broker and a worker; return the summary."""
    out = out or sys.stdout  # looked up per call: the stream may be replaced (tests, pipes)
    load_product(detector=detector, session_factory=session_factory, product=PRODUCT)
    broker = InProcessBroker()
    producer = broker.producer()
    truth: dict[str, str] = {}
    frames = frames_from_files([p for p, _ in plan.stream], product=PRODUCT, camera_id="cam-01")
    for frame, (_, kind) in zip(frames, plan.stream, strict=True):
        truth[frame.frame_id] = kind
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
    worker = InferenceWorker(
        consumer=broker.consumer([config.frames_topic], group_id="demo"),
        producer=producer, session_factory=session_factory, detector=detector,
        config=config, metrics=WorkerMetrics(CollectorRegistry()),
    )
    total = len(plan.stream)
    done = flagged = 0
    started = time.perf_counter()
    stop = threading.Event()
    while done < total:
        outcome = worker.step(stop)
        if outcome is None:
            continue
        done += outcome.consumed
        flagged += outcome.flagged
        rate = done / (time.perf_counter() - started)
        print(f"\r  processed {done:4d}/{total}  flagged {flagged:3d}  {rate:5.1f} frames/s",
              end="", file=out, flush=True)
    elapsed = time.perf_counter() - started
    print(file=out)
    caught: Counter[str] = Counter()
    with session_factory() as session:
        for view in repositories.list_verdicts(session=session, product=PRODUCT, limit=total):
            if view.anomalous:
                caught[truth.get(view.frame_id, "?")] += 1
    kinds = Counter(kind for _, kind in plan.stream)
    return {"frames": done, "flagged": flagged, "seconds": elapsed,
            "frames_per_s": done / elapsed, "caught": dict(caught), "kinds": dict(kinds)}


def format_summary(summary: dict[str, object], threshold: float) -> str:
    """Human-readable demo summary."""
    caught = summary["caught"]
    kinds = summary["kinds"]
    assert isinstance(caught, dict)
    assert isinstance(kinds, dict)
    lines = [
        f"frames processed : {summary['frames']}",
        f"flagged          : {summary['flagged']}",
        f"throughput       : {summary['frames_per_s']:.1f} frames/s "
        f"({summary['seconds']:.1f} s, model + decode + SQLite)",
        f"threshold        : {threshold:.4f} (calibrated on the pool's normals)",
    ]
    for kind in ("nominal", "local", "global"):
        lines.append(f"  {kind:<8} frames flagged: {caught.get(kind, 0)}/{kinds.get(kind, 0)}")
    return "\n".join(lines)


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """`agpt demo`: migrate, seed the pool, run the line, print the counts, start the review.

    The demo migrates its database itself (the embedded default works in two commands).
    """
    from agpt import wiring
    from agpt.review_commands import (
        assistant_command,
        create_demo_users,
        dashboard_command,
        supervise,
    )

    # The demo's textile defects are ~10 px: it runs the 448-px profile unless told otherwise.
    if args.profile is None and "AGPT_PROFILE" not in os.environ:
        settings = settings.model_copy(update={"profile": PROFILE})
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    if args.fresh and settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    print(f"[1/4] database    {settings.database_url}")
    session_factory = wiring.database(settings, migrate=True)
    print(f"[2/4] model       profile {settings.profile} (first run converts DINOv2-S, ~1 min)")
    detector = wiring.detector(settings)
    plan = plan_line(frames=args.frames, shots=args.shots)
    seed_pool(session_factory, plan.pool)
    print(f"[3/4] line        {len(plan.stream)} frames, pool of {len(plan.pool)} normals")
    summary = run_line(detector=detector, session_factory=session_factory, plan=plan,
                       config=wiring.worker_config(settings))
    memory = detector.product(PRODUCT)
    assert memory is not None
    print(format_summary(summary, memory.calibration.threshold))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    for name, password in create_demo_users(session_factory).items():
        shown = password if password is not None else "(existing account, unchanged)"
        print(f"      login       {name} / {shown}")
    if args.no_dashboard:
        return 0
    print(f"[4/4] dashboard   http://localhost:{settings.dashboard_port}  with the chat "
          f"assistant at {settings.assistant_url}  (Ctrl-C to stop)")
    # The dashboard and its chat assistant, both stopped by SIGTERM/SIGINT.
    return supervise([assistant_command(settings), dashboard_command(settings)])
