"""The phases of `agpt bench stream` and what they measure with: frames, CPU, worker thread.

See :mod:`agpt.bench.stream` for the run that strings them together.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from agpt.bench.model import measure_rate
from inference.images import ImageLimits, decode_image
from inference.model.fewshot.fewshot_detector import FewShotDetector
from inference.worker import BatchOutcome, InferenceWorker, WorkerConfig
from ingest.envelope import FrameEnvelope, decode
from ingest.sources import Pacer, image_files
from ingest.transport.kafka import KafkaConfig, KafkaTransport
from storage import repositories

PRODUCT = "bench-textile"


# -- frames ---------------------------------------------------------------------------------
def textile_images(references: int) -> tuple[list[bytes], list[bytes]]:
    """(pool references, stream images) as encoded JPEG bytes from the textile wheel.

    The stream mixes nominal frames with local and global defects (3:1), as on the demo line.
    """
    import conformal_clip_data as data

    nominal = [p.read_bytes() for p in image_files(data.nominal_dir())]
    defects = [p.read_bytes() for d in (data.local_dir(), data.global_dir())
               for p in image_files(d)]
    refs, rest = nominal[:references], nominal[references:]
    stream: list[bytes] = []
    for i, image in enumerate(rest[:150]):
        stream.append(image)
        if i % 3 == 2 and defects:
            stream.append(defects[(i // 3) % len(defects)])
    return refs, stream


def encoded_frames(images: Sequence[bytes], count: int, *, camera_id: str) -> list[bytes]:
    """``count`` wire messages cycling through ``images`` (capture time = now)."""
    return [
        FrameEnvelope(camera_id=camera_id, frame_id=f"{i:07d}", product=PRODUCT,
                      captured_at=datetime.now(UTC), image=images[i % len(images)]).encode()
        for i in range(count)
    ]


# -- CPU accounting -------------------------------------------------------------------------
def _process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float | None:
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process, the broker process and the whole machine over a phase."""

    def __init__(self, broker_pid: int | None) -> None:
        """Start measuring now; ``broker_pid`` is None for a broker not started by us."""
        self._broker_pid = broker_pid
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._broker = _process_cpu_s(broker_pid) if broker_pid else None
        self._machine = _machine_busy_s()

    def report(self) -> dict[str, float | None]:
        """Cores used on average since the start (1.0 = one core busy all the time)."""
        wall = max(1e-9, time.perf_counter() - self._wall)
        broker_now = _process_cpu_s(self._broker_pid) if self._broker_pid else None
        machine_now = _machine_busy_s()

        def cores(now: float | None, then: float | None) -> float | None:
            return None if now is None or then is None else round((now - then) / wall, 2)

        own = cores(time.process_time(), self._own)
        broker = cores(broker_now, self._broker)
        machine = cores(machine_now, self._machine)
        others = (None if machine is None or own is None
                  else round(max(0.0, machine - own - (broker or 0.0)), 2))
        return {"wall_s": round(wall, 2), "bench_process_cores": own, "broker_cores": broker,
                "machine_busy_cores": machine, "other_processes_cores": others}


# -- worker in a thread ---------------------------------------------------------------------
class WorkerLoop:
    """Runs ``worker.run`` in a thread and records when each batch was committed."""

    def __init__(self, worker: InferenceWorker, registry: CollectorRegistry) -> None:
        """Wrap ``worker`` (whose metrics are on ``registry``); :meth:`start` runs it."""
        self.worker = worker
        self.registry = registry
        self.batches: list[tuple[float, int]] = []  # (perf_counter at the end, records)
        self.error: BaseException | None = None
        self.broker_pid: int | None = None
        self.meter: CpuMeter | None = None  # from the end of the first batch (joined, warm)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-worker", daemon=True)

    def start(self) -> WorkerLoop:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.worker.run(self._stop, on_batch=self._committed)  # as `agpt worker` runs it
        except BaseException as exc:  # re-raised by wait_for / stop in the caller's thread
            self.error = exc

    def _committed(self, outcome: BatchOutcome) -> None:
        self.batches.append((time.perf_counter(), outcome.consumed))
        if self.meter is None:
            self.meter = CpuMeter(self.broker_pid)

    @property
    def consumed(self) -> int:
        """Records processed so far."""
        return sum(n for _, n in self.batches)

    def wait_for(self, count: int, timeout_s: float) -> None:
        """Block until ``count`` records are processed.

        Raises:
            RuntimeError: The worker failed or did not get there within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.consumed < count:
            if self.error is not None:
                msg = f"the bench worker failed: {self.error!r}"
                raise RuntimeError(msg) from self.error
            if time.monotonic() > deadline:
                msg = f"the worker processed {self.consumed}/{count} frames in {timeout_s} s"
                raise RuntimeError(msg)
            time.sleep(0.02)

    def stop(self) -> None:
        """Finish the batch in hand and stop the thread."""
        self._stop.set()
        self._thread.join(timeout=60)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def verdict_rows(session_factory: sessionmaker[Session], camera_id: str) -> int:
    """The number of stored verdicts of ``camera_id``."""
    with session_factory() as session:
        return repositories.count_verdicts(session=session, camera_id=camera_id)


def produce_all(transport: KafkaTransport, topic: str, frames: Sequence[bytes], *,
                key: bytes) -> None:
    """Send every frame under one key and wait until the broker has acknowledged them all."""
    producer = transport.producer()
    try:
        for value in frames:
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


# -- phases ---------------------------------------------------------------------------------
def broker_only(transport: KafkaTransport, topic: str, frames: Sequence[bytes], *,
                batch_size: int, broker_pid: int | None, timeout_s: float) -> dict[str, object]:
    """Phase 1: produce ``frames``, then consume them in committed batches (no model)."""
    meter = CpuMeter(broker_pid)
    started = time.perf_counter()
    produce_all(transport, topic, frames, key=b"bench")
    produce_s = time.perf_counter() - started
    consumer = transport.consumer([topic], group_id=f"bench-broker-{uuid.uuid4().hex[:8]}")
    times: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while sum(n for _, n in times) < len(frames) and time.monotonic() < deadline:
            records = consumer.poll(max_records=batch_size, timeout_s=0.05)
            if records:
                for record in records:
                    decode(record.value)  # the envelope, as the worker parses it
                consumer.commit(records)
                times.append((time.perf_counter(), len(records)))
    finally:
        consumer.close()
    received = sum(n for _, n in times)
    if received < len(frames):
        msg = f"broker-only phase: {received}/{len(frames)} frames consumed in {timeout_s} s"
        raise RuntimeError(msg)
    # From the end of the first batch (the group join is not throughput) to the last.
    consume_rate = (received - times[0][1]) / max(1e-9, times[-1][0] - times[0][0])
    return {"frames": len(frames), "produce_frames_per_s": round(len(frames) / produce_s, 1),
            "consume_frames_per_s": round(consume_rate, 1), "cpu": meter.report()}


def model_only(detector: FewShotDetector, images: Sequence[bytes], *, batch_size: int,
               seconds: float) -> dict[str, object]:
    """Phase 2: the detector on pre-decoded batches; also the image-decode rate alone."""
    limits = ImageLimits()
    decoded: list[Image.Image] = [decode_image(data, limits) for data in images[:batch_size]]
    meter = CpuMeter(None)
    rate = measure_rate(lambda: detector.detect(PRODUCT, decoded), batch_size, seconds)
    cpu = meter.report()
    decode_rate = measure_rate(lambda: [decode_image(d, limits) for d in images[:batch_size]],
                               batch_size, min(1.0, seconds / 4))
    return {"frames_per_s": round(rate, 2), "image_decode_frames_per_s": round(decode_rate, 1),
            "batch_size": batch_size, "cpu": cpu}


def end_to_end(loop: WorkerLoop, transport: KafkaTransport, topic: str,
               frames: Sequence[bytes], *, broker_pid: int | None,
               timeout_s: float) -> dict[str, object]:
    """Phase 3: a backlog of ``frames`` is produced, then the worker (started now) drains it."""
    produce_all(transport, topic, frames, key=b"bench-backlog")
    loop.broker_pid = broker_pid
    before = stage_totals(loop.registry)
    loop.start()
    loop.wait_for(len(frames), timeout_s)
    assert loop.meter is not None
    cpu = loop.meter.report()
    batches = list(loop.batches)
    (first_end, first_n), (last_end, _) = batches[0], batches[-1]
    rate = (len(frames) - first_n) / max(1e-9, last_end - first_end)
    return {"frames": len(frames), "frames_per_s": round(rate, 2),
            "batches": len(batches), "mean_batch": round(len(frames) / len(batches), 2),
            "per_batch_ms": stage_means(before, stage_totals(loop.registry)), "cpu": cpu}


def stage_totals(registry: CollectorRegistry) -> dict[str, float]:
    """Running sums of the worker's own timers (model, database) and batch count."""
    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    return {"model": value("agpt_inference_duration_seconds_sum"),
            "database": value("agpt_db_write_duration_seconds_sum"),
            "batches": value("agpt_inference_duration_seconds_count")}


def stage_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean milliseconds per batch spent in the model and in the database transaction."""
    batches = max(1.0, after["batches"] - before["batches"])
    return {stage: round(1000 * (after[stage] - before[stage]) / batches, 1)
            for stage in ("model", "database")}


def _send_paced(config: KafkaConfig, topic: str, images: Sequence[bytes], rate: float,
                seconds: float, camera_id: str, ready: Any, go: Any, result: Any) -> None:
    """The camera side of a paced phase, in its own process (as cameras are on a line).

    In the worker's process the producer's Python work (envelopes, kafka-python's sender
    thread) would compete for the interpreter lock with the worker between its model calls:
    measured, a batch of one took ~20 ms longer while a same-process producer sent.
    """
    producer = KafkaTransport(config).producer()
    try:
        ready.set()
        go.wait()
        pacer = Pacer(rate)
        sent = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            pacer.wait()
            frame = FrameEnvelope(camera_id=camera_id, frame_id=f"{sent:07d}", product=PRODUCT,
                                  captured_at=datetime.now(UTC),
                                  image=images[sent % len(images)])
            producer.send(topic, key=frame.key, value=frame.encode())
            sent += 1
        send_s = time.perf_counter() - started
        producer.flush()
    finally:
        producer.close()
    result.put((sent, send_s))


def paced_latency(loop: WorkerLoop, transport: KafkaTransport, topics: WorkerConfig,
                  images: Sequence[bytes], *, rate: float, seconds: float, camera_id: str,
                  already: int, broker_pid: int | None, timeout_s: float) -> dict[str, object]:
    """Phase 4: frames sent at ``rate`` for ``seconds``; capture→verdict per frame.

    The frames come from a child process (`_send_paced`), started and connected before the
    phase's clock and CPU meter start.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process running torch
    ready, go, result = context.Event(), context.Event(), context.Queue()
    sender = context.Process(target=_send_paced, daemon=True, args=(
        transport.config, topics.frames_topic, list(images), rate, seconds, camera_id,
        ready, go, result))
    sender.start()
    try:
        if not ready.wait(timeout_s):
            msg = f"the paced producer process did not start within {timeout_s} s"
            raise RuntimeError(msg)
        meter = CpuMeter(broker_pid)
        before = stage_totals(loop.registry)
        batches_before = len(loop.batches)
        go.set()
        sent, send_s = result.get(timeout=seconds + timeout_s)
    finally:
        sender.join(timeout=10)
        if sender.is_alive():
            sender.kill()
    # The worker sets the gauge after each poll: what it had not read when sending stopped.
    lag_at_end = loop.registry.get_sample_value("agpt_consumer_lag_messages")
    loop.wait_for(already + sent, timeout_s)
    cpu = meter.report()
    batches = len(loop.batches) - batches_before
    latencies = _latencies_ms(transport, topics.verdicts_topic, camera_id, sent, timeout_s)
    return {"target_frames_per_s": round(rate, 2), "sent": sent,
            "sent_frames_per_s": round(sent / send_s, 2), "verdicts": len(latencies),
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p95_ms": round(percentile(latencies, 0.95), 1),
            "max_ms": round(max(latencies), 1), "mean_ms": round(statistics.fmean(latencies), 1),
            "consumer_lag_at_end_of_sending": lag_at_end,
            "mean_batch": round(sent / max(1, batches), 2),
            "per_batch_ms": stage_means(before, stage_totals(loop.registry)), "cpu": cpu}


def _latencies_ms(transport: KafkaTransport, topic: str, camera_id: str, count: int,
                  timeout_s: float) -> list[float]:
    reader = transport.consumer([topic], group_id=f"bench-reader-{uuid.uuid4().hex[:8]}")
    latencies: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(latencies) < count and time.monotonic() < deadline:
            for record in reader.poll(max_records=500, timeout_s=0.2):
                verdict = json.loads(record.value)
                if verdict["camera_id"] != camera_id:
                    continue
                captured = datetime.fromisoformat(verdict["captured_at"])
                decided = datetime.fromisoformat(verdict["decided_at"])
                latencies[verdict["frame_id"]] = (decided - captured).total_seconds() * 1000
    finally:
        reader.close()
    if len(latencies) < count:
        msg = f"only {len(latencies)}/{count} paced verdicts reached {topic} in {timeout_s} s"
        raise RuntimeError(msg)
    return list(latencies.values())
