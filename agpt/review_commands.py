"""`agpt assistant`, `agpt dashboard` and `agpt user`: the review side of the CLI."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agpt.errors import UsageError
from agpt.pool_commands import pool_producer
from agpt.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


REVIEW_APP = Path(__file__).resolve().parent.parent / "review" / "app.py"
GRACEFUL_SHUTDOWN_S = 10


# -- agpt assistant -------------------------------------------------------------------------
def run_assistant(settings: Settings, *, host: str | None = None, port: int | None = None) -> int:
    """Serve the chat endpoint and the pool announcer until SIGTERM/SIGINT (exit 0)."""
    import uvicorn

    from agpt import wiring
    from inference.assistant import Announcer, build_app
    from inference.profiles import AnomalyGPTProfile

    wiring.configure_logging()
    wiring.configure_torch(settings)
    profile = wiring.model_profile(settings)
    session_factory = wiring.database(settings)
    image_size = profile.detector.image_size

    def engine_factory():  # noqa: ANN202 - the engine's type is the profile's
        from inference.chat_engines import AnomalyGPTEngine, GroundedEngine

        if isinstance(profile, AnomalyGPTProfile):
            from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector

            detector = wiring.detector(settings)
            assert isinstance(detector, AnomalyGPTDetector)
            return AnomalyGPTEngine(detector, session_factory=session_factory)
        from inference.model.weights.smollm import load_smollm2

        lm, tokenizer = load_smollm2(settings.cache_dir)
        return GroundedEngine(lm, tokenizer, model_id=f"{profile.name}+smollm2-135m-instruct")

    announcer = Announcer(
        session_factory=session_factory, topic=settings.pool_topic,
        producer_factory=(lambda: pool_producer(settings)) if settings.kafka_bootstrap else None)
    app = build_app(session_factory=session_factory, engine_factory=engine_factory,
                    announcer=announcer, image_size=image_size, profile=profile.name,
                    blobs=wiring.blob_store(settings))
    config = uvicorn.Config(app, host=host or settings.assistant_host,
                            port=port or settings.assistant_port, log_level="info",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the
    # handlers it found: these make that a normal return (exit 0) after the cleanup below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        announcer.close()
    logging.getLogger("agpt.assistant").info("assistant stopped")
    return 0


# -- agpt dashboard -------------------------------------------------------------------------
def dashboard_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The Streamlit server's command line and environment.

    The dashboard reads only ``AGPT_DATABASE_URL``: it gets the URL with the password file
    and the TLS settings applied.
    """
    from agpt.connections import database_url

    env = {**os.environ, "AGPT_DATABASE_URL": database_url(settings),
           "AGPT_ASSISTANT_URL": settings.assistant_url}
    command = [sys.executable, "-m", "streamlit", "run", str(REVIEW_APP),
               "--server.headless", "true", "--server.port", str(settings.dashboard_port),
               "--browser.gatherUsageStats", "false"]
    return command, env


def exec_dashboard(settings: Settings) -> int:
    """Replace this process by the Streamlit server: SIGTERM reaches the server itself."""
    command, env = dashboard_command(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
    return 1  # not reached


def supervise(commands: Sequence[tuple[list[str], dict[str, str]]]) -> int:
    """Run child processes until one exits or SIGTERM/SIGINT arrives, then stop them all.

    Signals are forwarded to every child (SIGTERM, then SIGKILL after a grace period), so
    nothing is left running when the parent is told to stop.

    Returns:
        The exit status of the first child that exited, 0 when stopped by a signal.
    """
    import threading

    stop = threading.Event()
    children = [subprocess.Popen(command, env=env) for command, env in commands]

    def forward(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while not stop.wait(0.5):
            exited = [child for child in children if child.poll() is not None]
            if exited:
                status = exited[0].returncode
                break
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=GRACEFUL_SHUTDOWN_S + 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def assistant_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The `agpt assistant` child process of `agpt demo`."""
    env = {**os.environ, "AGPT_DATABASE_URL": settings.database_url,
           "AGPT_PROFILE": settings.profile}
    return [sys.executable, "-m", "agpt.cli", "assistant"], env


# -- agpt user ------------------------------------------------------------------------------
def read_password(args: argparse.Namespace) -> str:
    """The new account's password.

    From ``--password-env VAR``, ``--password-stdin`` (first line), or typed twice at the
    terminal.

    Raises:
        UsageError: no source given without a terminal, an unset variable, or a mismatch.
    """
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            msg = f"environment variable {args.password_env} is not set"
            raise UsageError(msg)
        return value
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        msg = "no terminal to ask for the password: use --password-stdin or --password-env VAR"
        raise UsageError(msg)
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        msg = "the two passwords differ; nothing was created"
        raise UsageError(msg)
    return first


def run_user(settings: Settings, args: argparse.Namespace) -> int:
    """`agpt user add|list|disable`."""
    from agpt import wiring
    from storage.errors import UserExistsError, UserNotFoundError
    from storage.repositories import create_user, disable_user, list_users

    try:
        password = read_password(args) if args.user_command == "add" else None
        session_factory = wiring.database(settings)
        with session_factory.begin() as session:
            if args.user_command == "add":
                user = create_user(session=session, name=args.name, password=password,
                                   role=args.role, created_by=actor())
                print(f"user {user.name} created ({user.role})")
            elif args.user_command == "disable":
                user = disable_user(session=session, name=args.name, actor=actor())
                print(f"user {user.name} disabled")
            else:
                for user in list_users(session=session):
                    state = "disabled" if user.disabled else "active"
                    kind = "local" if user.local else "oidc"
                    print(f"{user.name:<24} {user.role:<9} {state:<8} {kind:<5} "
                          f"{user.created_at:%Y-%m-%d %H:%M} by {user.created_by or '-'}")
    except (UsageError, ValueError, UserExistsError, UserNotFoundError) as exc:
        print(f"agpt user {args.user_command}: {exc}", file=sys.stderr)
        return 2
    return 0


def actor() -> str:
    """Who runs the command ($USER, else "cli")."""
    return os.environ.get("USER") or "cli"


DEMO_USERS = (("operator", "operator"), ("engineer", "engineer"))


def create_demo_users(session_factory: sessionmaker[Session]) -> dict[str, str | None]:
    """The demo's operator and engineer accounts with fresh random passwords.

    Returns:
        Password per user name; None for an account that existed already (unchanged).
    """
    from storage.repositories import create_user, get_user

    made: dict[str, str | None] = {}
    with session_factory.begin() as session:
        for name, role in DEMO_USERS:
            if get_user(session=session, name=name) is not None:
                made[name] = None
                continue
            password = secrets.token_urlsafe(9)
            create_user(session=session, name=name, password=password, role=role,
                        created_by="demo")
            made[name] = password
    return made
