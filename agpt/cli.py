"""The `agpt` command line: argument parsing; each command group runs in its own module.

A user's mistake (a missing file, an unknown profile or product, a bad setting, an
unreachable broker or database, a database that is not migrated) is one line on stderr and
exit status 2; tracebacks are for bugs, and for everything with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from agpt.errors import UsageError
from agpt.ingest_commands import add_ingest_arguments
from agpt.settings import Settings, SettingsError, load_settings
from ingest.transport.base import TransportError
from storage.errors import DatabaseUnreachableError, SchemaNotCurrentError

# Exceptions that mean the user has something to fix, not that agpt has a bug.
USER_ERRORS = (UsageError, SettingsError, SchemaNotCurrentError, DatabaseUnreachableError,
               TransportError)


def _non_negative(text: str) -> int:
    """An integer >= 0 (argparse type)."""
    value = int(text)
    if value < 0:
        msg = f"must be >= 0, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(database_url=getattr(args, "database_url", None),
                         kafka_bootstrap=getattr(args, "kafka_bootstrap", None),
                         profile=getattr(args, "profile", None),
                         stream_window=getattr(args, "stream_window", None))


def _cmd_demo(args: argparse.Namespace) -> int:
    from agpt.demo import run_demo

    return run_demo(_settings(args), args)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from agpt.ingest_commands import run_ingest

    return run_ingest(_settings(args), args)


def _cmd_worker(args: argparse.Namespace) -> int:
    from agpt.worker_commands import run_worker

    return run_worker(_settings(args), args)


def _cmd_pool_add(args: argparse.Namespace) -> int:
    from agpt.pool_commands import run_pool_add

    return run_pool_add(_settings(args), args)


def _cmd_pool_remove(args: argparse.Namespace) -> int:
    from agpt.pool_commands import run_pool_remove

    return run_pool_remove(_settings(args), args)


def _cmd_pool_list(args: argparse.Namespace) -> int:
    from agpt.pool_commands import run_pool_list

    return run_pool_list(_settings(args), args)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from agpt.prestart import prepare_database
    from agpt.review_commands import exec_dashboard

    settings = _settings(args)
    prepare_database(settings)  # refuse a database that is not migrated, before exec
    return exec_dashboard(settings)


def _cmd_assistant(args: argparse.Namespace) -> int:
    from agpt.review_commands import run_assistant

    return run_assistant(_settings(args), host=args.host, port=args.port)


def _cmd_user(args: argparse.Namespace) -> int:
    from agpt.review_commands import run_user

    return run_user(_settings(args), args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from agpt.eval_commands import run_eval

    return run_eval(_settings(args), args)


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from agpt.eval_commands import run_data_synth

    return run_data_synth(args)


def _cmd_chat(args: argparse.Namespace) -> int:
    from agpt.model_commands import run_chat

    return run_chat(_settings(args), args)


def _cmd_train(args: argparse.Namespace) -> int:
    from agpt.train_commands import run_train

    return run_train(_settings(args), args)


def _cmd_model_check(args: argparse.Namespace) -> int:
    from agpt.model_commands import run_model_check

    return run_model_check(args)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from agpt.connections import database_url
    from storage.migrate import upgrade

    settings = _settings(args)
    upgrade(database_url(settings))
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    print(f"database at head: {where}")  # without the secret
    return 0


def _cmd_bench_model(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.random_weights:  # imports only the model (a GPU machine needs no service clients)
        return _bench_random_weights(settings, args)
    from agpt import wiring
    from agpt.bench.model import bench_model

    wiring.configure_logging("WARNING")
    report = bench_model(settings, batch_size=args.batch_size, seconds=args.seconds)
    print(json.dumps(report, indent=2))
    return 0


def _bench_random_weights(settings: Settings, args: argparse.Namespace) -> int:
    import torch

    from agpt.bench.gpu_anomalygpt import RandomWeightsPlan, bench_random_weights

    if settings.profile != "anomalygpt-7b":
        msg = (f"--random-weights builds the released AnomalyGPT shapes: use --profile "
               f"anomalygpt-7b (got {settings.profile})")
        raise UsageError(msg)
    try:
        sizes = tuple(int(size) for size in args.batch_sizes.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        msg = f"--batch-sizes takes positive integers separated by commas, got {args.batch_sizes!r}"
        raise UsageError(msg)
    device = args.device or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        msg = ("no CUDA device here: run on a GPU machine, or use --device cpu --scale tiny "
               "for a smoke test of the same code")
        raise UsageError(msg)
    try:
        variants = tuple(int(size) for size in args.serving_forms.split(",") if size)
    except ValueError:
        variants = (0,)
    if variants and min(variants) < 1:
        msg = f"--serving-forms takes batch sizes separated by commas, got {args.serving_forms!r}"
        raise UsageError(msg)
    plan = RandomWeightsPlan(device=device, batch_sizes=tuple(sorted(sizes)), variants=variants,
                             new_tokens=args.new_tokens, repeats=args.repeats, scale=args.scale,
                             dtype="bfloat16" if args.scale == "full" else "float32")
    report = bench_random_weights(plan, Path(args.json) if args.json else None)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_bench_stream(args: argparse.Namespace) -> int:
    from agpt.bench.stream import StreamBenchPlan, run_command

    plan = StreamBenchPlan(seconds=args.seconds, load=args.load,
                           broker_frames=args.broker_frames)
    return run_command(_settings(args), plan=plan, json_out=args.json, keep_rows=args.keep_rows,
                       torch_threads=args.torch_threads)


def _cmd_bench_review(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agpt import wiring
    from agpt.bench.review import bench_review

    settings = _settings(args)
    wiring.configure_logging("WARNING")
    report = bench_review(settings, verdicts=args.verdicts, small=args.small,
                          repeats=args.repeats, questions=args.questions,
                          admin_url=args.postgres_url, keep=args.keep)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _cmd_bench_storage(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from agpt.bench.storage import bench_storage

    try:
        sizes = tuple(int(float(size)) for size in args.sizes.split(","))
    except ValueError as exc:
        msg = f"--sizes takes comma-separated counts such as 1e5,1e6, not {args.sizes!r}"
        raise UsageError(msg) from exc
    try:
        report = bench_storage(admin_url=args.admin_url, sizes=sizes, calls=args.calls)
    except OperationalError as exc:
        msg = (f"PostgreSQL at --admin-url is unreachable ({exc.orig}); start it or pass a URL "
               "whose user may CREATE DATABASE")
        raise UsageError(msg) from exc
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _cmd_retention_run(args: argparse.Namespace) -> int:
    from agpt.retention_commands import run_retention_command

    return run_retention_command(_settings(args), args)


class _Parser(argparse.ArgumentParser):
    """Argument mistakes in one line (with where to find the usage), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit 2."""
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _add_common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the subcommand; after it, an absent option must not reset
    # a value given before it, hence SUPPRESS.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--debug", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="show tracebacks of user errors too")
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
    parser = _Parser(prog="agpt", description=__doc__.split("\n\n")[0])
    _add_common_options(parser, suppress=False)
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True))

    p = sub.add_parser("demo", help="run a small line end to end on embedded defaults")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--shots", type=int, default=6, help="normal images seeded into the pool")
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument("--keep", dest="fresh", action="store_false",
                   help="keep the existing SQLite file instead of starting fresh")
    p.add_argument("--json", help="write the summary as JSON")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("ingest", help="send camera frames: folder, watch, video, replay, simulate")
    add_ingest_arguments(p)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("worker", help="run an inference worker (consumer-group member)")
    p.add_argument("--metrics-port", type=int, default=9400,
                   help="health and Prometheus port (0: none)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("pool", help="the normal reference images per product")
    pool_sub = _Subparsers(p.add_subparsers(dest="pool_command", required=True))
    s = pool_sub.add_parser("add", help="add normal images to a product's pool")
    s.add_argument("--product", required=True)
    s.add_argument("--by", help="who adds them (default: $USER)")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=_cmd_pool_add)
    s = pool_sub.add_parser("list", help="list a product's pool entries")
    s.add_argument("--product", required=True)
    s.add_argument("--all", action="store_true", help="include removed entries")
    s.set_defaults(func=_cmd_pool_list)
    s = pool_sub.add_parser("remove", help="take an entry out of its pool")
    s.add_argument("id", type=int)
    s.add_argument("--by", help="who removes it (default: $USER)")
    s.set_defaults(func=_cmd_pool_remove)

    p = sub.add_parser("dashboard", help="start the review dashboard")
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("assistant", help="serve the dashboard's chat endpoint and announce "
                       "pool changes")
    p.add_argument("--host", help="bind address (AGPT_ASSISTANT_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (AGPT_ASSISTANT_PORT, default 8502)")
    p.set_defaults(func=_cmd_assistant)

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
    s.set_defaults(func=_cmd_user)
    s = user_sub.add_parser("list", help="list accounts")
    s.set_defaults(func=_cmd_user)
    s = user_sub.add_parser("disable", help="disable an account (kept for the audit)")
    s.add_argument("name")
    s.set_defaults(func=_cmd_user)

    p = sub.add_parser("eval", help="image/pixel AUROC and verdict accuracy on an MVTec-AD layout")
    p.add_argument("--data", required=True)
    p.add_argument("--model", dest="profile", default=argparse.SUPPRESS,
                   help="the model profile to evaluate (same as --profile)")
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--categories")
    p.add_argument("--image-size", type=int, help="override the profile's input size")
    p.add_argument("--stream-window", type=_non_negative, default=None,
                   help="frames of the stream memory (AGPT_STREAM_WINDOW; 0 = off; default "
                   "the profile's)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the shuffled order in which test images are streamed")
    p.add_argument("--json")
    p.add_argument("--against", metavar="REPORT",
                   help="an earlier `--json` report of the same data (e.g. --shots 1): print "
                   "each category's image AUROC change with a paired-bootstrap 95 %% interval")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("data", help="test data sets")
    data_sub = _Subparsers(p.add_subparsers(dest="data_command", required=True))
    s = data_sub.add_parser("synth", help="build the MVTec-layout set of drawn defects")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing set")
    s.set_defaults(func=_cmd_data_synth)

    p = sub.add_parser("train", help="stage-2 training on simulated anomalies -> a delta file")
    p.add_argument("--config", required=True, help="TOML or YAML training config")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in the config's output dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("chat", help="multi-turn dialogue about one image")
    p.add_argument("image")
    p.add_argument("--product", required=True)
    p.add_argument("--refs", required=True, help="folder of normal reference images")
    p.add_argument("--ask", action="append", help="a question (repeatable; else interactive)")
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("model", help="model files")
    model_sub = _Subparsers(p.add_subparsers(dest="model_command", required=True))
    s = model_sub.add_parser("check", help="validate official checkpoint files")
    s.add_argument("--imagebind", help="imagebind_huge.pth")
    s.add_argument("--llm", help="Vicuna-7B Hugging Face directory")
    s.add_argument("--pandagpt", help="PandaGPT delta pytorch_model.pt")
    s.add_argument("--anomalygpt", help="AnomalyGPT delta pytorch_model.pt")
    s.set_defaults(func=_cmd_model_check)

    p = sub.add_parser("db", help="database maintenance")
    db_sub = _Subparsers(p.add_subparsers(dest="db_command", required=True))
    s = db_sub.add_parser("upgrade", help="migrate the database to the latest schema")
    s.set_defaults(func=_cmd_db_upgrade)

    p = sub.add_parser("bench", help="benchmarks")
    bench_sub = _Subparsers(p.add_subparsers(dest="bench_command", required=True))
    s = bench_sub.add_parser("model", help="model-only frames/s and peak RSS")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--random-weights", action="store_true",
                   help="with --profile anomalygpt-7b: the released shapes with random weights "
                   "on a GPU, detection and verdict frames/s per batch size beside the batch-1 "
                   "generation baseline (no checkpoint needed)")
    s.add_argument("--device", help="--random-weights: torch device (default cuda)")
    s.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256",
                   help="--random-weights: batch sizes, comma-separated")
    s.add_argument("--serving-forms", default="",
                   help="--random-weights: batch sizes (comma-separated) at which to measure the "
                   "serving forms too: LoRA merged, then FP8 linears")
    s.add_argument("--new-tokens", type=int, default=20,
                   help="--random-weights: answer length of the generation baseline")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--scale", choices=("full", "tiny"), default="full",
                   help="--random-weights: tiny = the same architecture at test size")
    s.add_argument("--json", help="write the report as JSON (after every batch size)")
    s.set_defaults(func=_cmd_bench_model)
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
    s.set_defaults(func=_cmd_bench_stream)
    s = bench_sub.add_parser("review", help="dashboard Queue first render at 10^5 verdicts in "
                             "PostgreSQL and chat first-token latency through the assistant")
    s.add_argument("--verdicts", type=int, default=100_000)
    s.add_argument("--small", type=int, default=1_000,
                   help="verdicts of the side-by-side small-table render")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--questions", type=int, default=5)
    s.add_argument("--postgres-url", help="a PostgreSQL URL allowed to CREATE DATABASE "
                   "(default: AGPT_DATABASE_URL when PostgreSQL, else the local server)")
    s.add_argument("--keep", action="store_true", help="keep the benchmark database")
    s.add_argument("--json", help="write the report as JSON")
    s.set_defaults(func=_cmd_bench_review)
    s = bench_sub.add_parser("storage", help="insert rate and dashboard query p95 at 1e5, 1e6 "
                             "and 1e7 verdicts in scratch PostgreSQL databases")
    s.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                   help="a PostgreSQL database whose user may CREATE DATABASE")
    s.add_argument("--sizes", default="1e5,1e6,1e7", help="comma-separated verdict counts")
    s.add_argument("--calls", type=int, default=100, help="calls per query and size")
    s.add_argument("--json", help="write the report as JSON")
    s.set_defaults(func=_cmd_bench_storage)

    p = sub.add_parser("retention", help="delete images and rows past their retention")
    retention_sub = _Subparsers(p.add_subparsers(dest="retention_command", required=True))
    s = retention_sub.add_parser("run", help="apply AGPT_RETENTION_DEFAULT / "
                                 "AGPT_RETENTION_PRODUCTS in bounded batches")
    s.add_argument("--dry-run", action="store_true", help="print what is due, delete nothing")
    s.add_argument("--batch-size", type=int, help="frames per transaction "
                   "(default AGPT_RETENTION_BATCH_SIZE)")
    s.set_defaults(func=_cmd_retention_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agpt` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"agpt: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace runs collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
