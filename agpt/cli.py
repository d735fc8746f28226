"""The `agpt` command line: the composition root of every process."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agpt.ingest_commands import add_ingest_arguments
from agpt.settings import Settings, SettingsError

if TYPE_CHECKING:
    from inference.pool import PoolChange
    from ingest.transport.base import Producer

def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in {
        "database_url": getattr(args, "database_url", None),
        "kafka_bootstrap": getattr(args, "kafka_bootstrap", None),
        "profile": getattr(args, "profile", None),
    }.items() if v is not None}
    return Settings(**overrides)


def cmd_chat(args: argparse.Namespace) -> int:
    from agpt.model_commands import run_chat

    return run_chat(_settings(args), args)


def cmd_model_check(args: argparse.Namespace) -> int:
    from agpt.model_commands import run_model_check

    return run_model_check(args)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from storage.migrate import upgrade

    settings = _settings(args)
    from agpt.connections import database_url

    upgrade(database_url(settings))
    print(f"database at head: {settings.database_url}")  # without the secret
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agpt import demo, wiring

    # The demo's textile defects are ~10 px: it runs the 448-px profile unless told otherwise.
    settings = _settings(args)
    if args.profile is None and "AGPT_PROFILE" not in os.environ:
        settings = settings.model_copy(update={"profile": demo.PROFILE})
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    if args.fresh and settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    print(f"[1/4] database    {settings.database_url}")
    session_factory = wiring.database(settings)
    print(f"[2/4] model       profile {settings.profile} (first run converts DINOv2-S, ~1 min)")
    detector = wiring.detector(settings)
    plan = demo.plan_line(frames=args.frames, shots=args.shots)
    demo.seed_pool(session_factory, plan.pool)
    print(f"[3/4] line        {len(plan.stream)} frames, pool of {len(plan.pool)} normals")
    summary = demo.run_line(detector=detector, session_factory=session_factory, plan=plan,
                            config=wiring.worker_config(settings))
    memory = detector.product(demo.PRODUCT)
    assert memory is not None
    print(demo.format_summary(summary, memory.calibration.threshold))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    from agpt.review_commands import create_demo_users

    for name, password in create_demo_users(session_factory).items():
        shown = password if password is not None else "(existing account, unchanged)"
        print(f"      login       {name} / {shown}")
    if args.no_dashboard:
        return 0
    print(f"[4/4] dashboard   http://localhost:{settings.dashboard_port}  with the chat "
          f"assistant at {settings.assistant_url}  (Ctrl-C to stop)")
    return _run_dashboard(settings)


def _run_dashboard(settings: Settings) -> int:
    """The demo's dashboard with its chat assistant, both stopped by SIGTERM/SIGINT."""
    from agpt.review_commands import assistant_command, dashboard_command, supervise

    return supervise([assistant_command(settings), dashboard_command(settings)])


def cmd_dashboard(args: argparse.Namespace) -> int:
    from agpt.review_commands import exec_dashboard

    return exec_dashboard(_settings(args))


def cmd_assistant(args: argparse.Namespace) -> int:
    from agpt.review_commands import run_assistant

    return run_assistant(_settings(args), host=args.host, port=args.port)


def cmd_user(args: argparse.Namespace) -> int:
    from agpt.review_commands import run_user

    return run_user(_settings(args), args)


def cmd_eval(args: argparse.Namespace) -> int:
    from agpt import wiring
    from inference.evaluation.runner import evaluate, format_table

    settings = _settings(args)
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    detector = wiring.detector(settings, image_size=args.image_size)
    categories = args.categories.split(",") if args.categories else None
    report = evaluate(detector, Path(args.data), shots=args.shots, categories=categories)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from inference.evaluation.synthetic import build_textures_set

    root = build_textures_set(Path(args.out), seed=args.seed, overwrite=args.overwrite)
    print(f"MVTec-layout set written to {root}")
    return 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from agpt import wiring
    from agpt.bench.model import bench_model

    settings = _settings(args)
    wiring.configure_logging("WARNING")
    report = bench_model(settings, batch_size=args.batch_size, seconds=args.seconds)
    print(json.dumps(report, indent=2))
    return 0


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from agpt.bench.stream import StreamBenchPlan, run_command

    plan = StreamBenchPlan(seconds=args.seconds, load=args.load,
                           broker_frames=args.broker_frames)
    return run_command(_settings(args), plan=plan, json_out=args.json, keep_rows=args.keep_rows,
                       torch_threads=args.torch_threads)


def cmd_ingest(args: argparse.Namespace) -> int:
    from agpt.ingest_commands import run_ingest

    return run_ingest(_settings(args), args)


def cmd_worker(args: argparse.Namespace) -> int:
    """A consumer-group member until SIGTERM/SIGINT: the batch in hand is finished and
    committed, then the consumer leaves the group and the producer is flushed and closed."""
    from prometheus_client import CollectorRegistry

    from agpt import wiring
    from inference.health import HealthServer, Readiness
    from inference.metrics import WorkerMetrics
    from inference.pool import load_all
    from inference.pool_updates import open_pool_updates
    from inference.worker import InferenceWorker

    settings = _settings(args)
    wiring.configure_logging()
    if not settings.kafka_bootstrap:
        print("agpt worker needs a broker: set AGPT_KAFKA_BOOTSTRAP or --kafka-bootstrap "
              "(`agpt demo` runs a worker in process)", file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    registry = CollectorRegistry()
    readiness = Readiness("model", "consumer")
    # Liveness answers while the model loads; readiness waits for model, pool and consumer.
    health = (HealthServer(registry=registry, readiness=readiness, port=args.metrics_port)
              .start() if args.metrics_port else None)
    metrics = WorkerMetrics(registry, readiness=readiness)
    try:
        wiring.configure_torch(settings)
        session_factory = wiring.database(settings)
        detector = wiring.detector(settings)
        load_all(detector=detector, session_factory=session_factory)
        readiness.set("model", True)
        transport = wiring.transport(settings)
        producer = transport.producer()
        try:
            consumer = transport.consumer([settings.frames_topic],
                                          group_id=settings.consumer_group)
            # Every worker reads every pool change (not the shared group) and reloads.
            pool_updates = open_pool_updates(transport, topic=settings.pool_topic,
                                             metrics=metrics)
            try:
                worker = InferenceWorker(consumer=consumer, producer=producer,
                                         session_factory=session_factory, detector=detector,
                                         config=wiring.worker_config(settings),
                                         metrics=metrics, readiness=readiness,
                                         pool_updates=pool_updates)
                worker.run(stop)
            finally:
                # Leave the group now, not after the session timeout: partitions move at once.
                consumer.close()
                pool_updates.close()
        finally:
            producer.close()
    finally:
        if health is not None:
            health.stop()
    logging.getLogger("agpt.worker").info("worker stopped")
    return 0


def _pool_producer(settings: Settings) -> Producer | None:
    """A producer on the (compacted) pool topic, or None with the in-process transport."""
    if not settings.kafka_bootstrap:
        return None
    from agpt import wiring

    transport = wiring.transport(settings)
    transport.ensure_topics([settings.pool_topic], partitions=1, compacted=True)
    return transport.producer()


def _pool_change(args: argparse.Namespace, change: Callable[..., PoolChange]) -> int:
    """Run a pool change (commit, then announce) and report it."""
    from agpt import wiring
    from ingest.transport.base import TransportError

    settings = _settings(args)
    session_factory = wiring.database(settings)
    try:
        producer = _pool_producer(settings)  # before the change: an unreachable broker stops it
    except TransportError as exc:
        print(f"nothing changed: cannot reach the broker ({exc})", file=sys.stderr)
        return 1
    try:
        done = change(session_factory=session_factory, producer=producer,
                      topic=settings.pool_topic)
    except TransportError as exc:
        print(f"the pool change is committed but was not announced ({exc}); workers pick "
              "it up when restarted", file=sys.stderr)
        return 1
    finally:
        if producer is not None:
            producer.close()
    where = f"announced on {settings.pool_topic}" if producer else "in-process: not announced"
    print(f"product {done.product}: {done.references} active references, pool version "
          f"{done.version} ({where})")
    return 0


def _actor(args: argparse.Namespace) -> str:
    return str(args.by or os.environ.get("USER") or "cli")


def cmd_pool_add(args: argparse.Namespace) -> int:
    from inference.pool import UnreadablePoolImageError, add_references

    images = []
    for name in args.images:
        try:
            images.append(Path(name).read_bytes())
        except OSError as exc:
            print(f"nothing added: {name}: {exc}", file=sys.stderr)
            return 2
    try:
        return _pool_change(args, functools.partial(
            add_references, product=args.product, images=images, added_by=_actor(args)))
    except UnreadablePoolImageError as exc:
        print(f"nothing added: {args.images[exc.index]}: {exc.reason}", file=sys.stderr)
        return 2


def cmd_pool_remove(args: argparse.Namespace) -> int:
    from inference.pool import remove_reference
    from storage.errors import PoolEntryNotFoundError

    try:
        return _pool_change(args, functools.partial(
            remove_reference, entry_id=args.id, actor=_actor(args)))
    except PoolEntryNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_pool_list(args: argparse.Namespace) -> int:
    from agpt import wiring
    from storage import repositories

    session_factory = wiring.database(_settings(args))
    with session_factory() as session:
        entries = repositories.list_pool_entries(session=session, product=args.product,
                                                 include_inactive=args.all)
        version = repositories.pool_version(session=session, product=args.product)
    print(f"product {args.product}: pool version {version}")
    for e in entries:
        state = "" if e.active else "  (removed)"
        print(f"{e.id:>8}  {e.added_at:%Y-%m-%d %H:%M:%S}  {e.source:<8}  {e.added_by}{state}")
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the loop finishes its batch, then stops)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("agpt.worker").info(
            "%s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _add_common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the subcommand; after it, an absent option must not reset
    # a value given before it, hence SUPPRESS.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--database-url", default=default, help="overrides AGPT_DATABASE_URL")
    parser.add_argument("--kafka-bootstrap", default=default,
                        help="overrides AGPT_KAFKA_BOOTSTRAP")
    parser.add_argument("--profile", default=default,
                        help="model profile (AGPT_PROFILE): cpu-small, cpu-small-448, "
                        "anomalygpt-7b")


class _Subparsers:
    """Adds the common options to every leaf subcommand."""

    def __init__(self, action: argparse._SubParsersAction) -> None:
        self._action = action

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        parser = self._action.add_parser(name, **kwargs)  # type: ignore[arg-type]
        _add_common_options(parser, suppress=True)
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="agpt", description=__doc__)
    _add_common_options(parser, suppress=False)
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True))

    p = sub.add_parser("demo", help="run a small line end to end on embedded defaults")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--shots", type=int, default=6, help="normal images seeded into the pool")
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument("--keep", dest="fresh", action="store_false",
                   help="keep the existing SQLite file instead of starting fresh")
    p.add_argument("--json", help="write the summary as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="send camera frames: folder, watch, video, replay, simulate")
    add_ingest_arguments(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("worker", help="run an inference worker (consumer-group member)")
    p.add_argument("--metrics-port", type=int, default=9400)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("pool", help="the normal reference images per product")
    pool_sub = _Subparsers(p.add_subparsers(dest="pool_command", required=True))
    s = pool_sub.add_parser("add", help="add normal images to a product's pool")
    s.add_argument("--product", required=True)
    s.add_argument("--by", help="who adds them (default: $USER)")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=cmd_pool_add)
    s = pool_sub.add_parser("list", help="list a product's pool entries")
    s.add_argument("--product", required=True)
    s.add_argument("--all", action="store_true", help="include removed entries")
    s.set_defaults(func=cmd_pool_list)
    s = pool_sub.add_parser("remove", help="take an entry out of its pool")
    s.add_argument("id", type=int)
    s.add_argument("--by", help="who removes it (default: $USER)")
    s.set_defaults(func=cmd_pool_remove)

    p = sub.add_parser("dashboard", help="start the review dashboard")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("assistant", help="serve the dashboard's chat endpoint and announce "
                       "pool changes")
    p.add_argument("--host", help="bind address (AGPT_ASSISTANT_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (AGPT_ASSISTANT_PORT, default 8502)")
    p.set_defaults(func=cmd_assistant)

    p = sub.add_parser("user", help="dashboard accounts")
    user_sub = _Subparsers(p.add_subparsers(dest="user_command", required=True))
    s = user_sub.add_parser("add", help="create an account")
    s.add_argument("name")
    s.add_argument("--role", required=True, choices=["operator", "engineer", "admin"])
    source = s.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    source.add_argument("--password-env", metavar="VAR",
                        help="read the password from environment variable VAR")
    s.set_defaults(func=cmd_user)
    s = user_sub.add_parser("list", help="list accounts")
    s.set_defaults(func=cmd_user)
    s = user_sub.add_parser("disable", help="disable an account (kept for the audit)")
    s.add_argument("name")
    s.set_defaults(func=cmd_user)

    p = sub.add_parser("eval", help="image/pixel AUROC and verdict accuracy on an MVTec-AD layout")
    p.add_argument("--data", required=True)
    p.add_argument("--model", dest="profile", default=argparse.SUPPRESS,
                   help="the model profile to evaluate (same as --profile)")
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--categories")
    p.add_argument("--image-size", type=int, help="override the profile's input size")
    p.add_argument("--json")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="test data sets")
    data_sub = _Subparsers(p.add_subparsers(dest="data_command", required=True))
    s = data_sub.add_parser("synth", help="build the MVTec-layout set of drawn defects")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing set")
    s.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("chat", help="multi-turn dialogue about one image")
    p.add_argument("image")
    p.add_argument("--product", required=True)
    p.add_argument("--refs", required=True, help="folder of normal reference images")
    p.add_argument("--ask", action="append", help="a question (repeatable; else interactive)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("model", help="model files")
    model_sub = _Subparsers(p.add_subparsers(dest="model_command", required=True))
    s = model_sub.add_parser("check", help="validate official checkpoint files")
    s.add_argument("--imagebind", help="imagebind_huge.pth")
    s.add_argument("--llm", help="Vicuna-7B Hugging Face directory")
    s.add_argument("--pandagpt", help="PandaGPT delta pytorch_model.pt")
    s.add_argument("--anomalygpt", help="AnomalyGPT delta pytorch_model.pt")
    s.set_defaults(func=cmd_model_check)

    p = sub.add_parser("db", help="database maintenance")
    db_sub = _Subparsers(p.add_subparsers(dest="db_command", required=True))
    s = db_sub.add_parser("upgrade", help="migrate the database to the latest schema")
    s.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("bench", help="benchmarks")
    bench_sub = _Subparsers(p.add_subparsers(dest="bench_command", required=True))
    s = bench_sub.add_parser("model", help="model-only frames/s and peak RSS")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seconds", type=float, default=10.0)
    s.set_defaults(func=cmd_bench_model)
    s = bench_sub.add_parser("stream", help="frames/s and capture→verdict latency through "
                             "broker + database, beside broker-only and model-only ceilings")
    s.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    s.add_argument("--load", type=float, default=0.8,
                   help="paced rate as a fraction of the model-only frames/s")
    s.add_argument("--broker-frames", type=int, default=400)
    s.add_argument("--torch-threads", type=int,
                   help="default AGPT_TORCH_THREADS, else all cores but one")
    s.add_argument("--keep-rows", action="store_true",
                   help="keep the run's frames and verdicts in the database")
    s.add_argument("--json", help="write the report as JSON")
    s.set_defaults(func=cmd_bench_stream)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agpt` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"agpt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
