"""`agpt user`, and `agpt dashboard` / `agpt assistant` stopping cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agpt.cli import main
from storage.engine import make_engine, make_session_factory
from storage.repositories import authenticate, list_users
from tests.fixtures.processes import REPO_ROOT, free_port, http_status, wait_for


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'users.sqlite'}"
    monkeypatch.setenv("AGPT_DATABASE_URL", url)
    return url


def test_user_add_list_disable(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("NEW_PW", "s3cret-password")
    assert main(["user", "add", "ann", "--role", "engineer", "--password-env", "NEW_PW"]) == 0
    assert main(["user", "list"]) == 0
    assert main(["user", "disable", "ann"]) == 0
    out = capsys.readouterr().out
    assert "user ann created (engineer)" in out
    assert "ann" in out.splitlines()[1]
    assert "user ann disabled" in out

    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        [ann] = list_users(session=session)
        assert (ann.role, ann.disabled) == ("engineer", True)
        assert authenticate(session=session, name="ann", password="s3cret-password") is None
    engine.dispose()


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (["user", "add", "bob", "--role", "operator", "--password-env", "UNSET_PW_VAR"], "",
     "UNSET_PW_VAR is not set"),
    (["user", "add", "bob", "--role", "operator", "--password-stdin"], "short\n",
     "at least 8 characters"),
    (["user", "add", "bob", "--role", "operator"], "", "use --password-stdin"),
    (["user", "disable", "nobody"], "", "does not exist"),
])
def test_user_mistakes_are_one_line_exit_2(db_url: str, argv: list[str], stdin: str,
                                           message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "agpt.cli", *argv], input=stdin, text=True,
                          capture_output=True, cwd=REPO_ROOT, timeout=120,
                          env={**os.environ, "AGPT_DATABASE_URL": db_url})
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_user_add_reads_the_password_from_stdin_and_refuses_duplicates(db_url: str) -> None:
    command = [sys.executable, "-m", "agpt.cli", "user", "add", "cy", "--role", "admin",
               "--password-stdin"]
    env = {**os.environ, "AGPT_DATABASE_URL": db_url}
    first = subprocess.run(command, input="long-enough-pw\n", text=True, capture_output=True,
                           cwd=REPO_ROOT, env=env, timeout=120)
    again = subprocess.run(command, input="long-enough-pw\n", text=True, capture_output=True,
                           cwd=REPO_ROOT, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 2
    assert "exists already" in again.stderr


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return {int(p) for p in out.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                           text=True, check=False).stdout.strip()
    return bool(state) and not state.startswith("Z")


@pytest.mark.slow
def test_dashboard_stops_with_its_server_on_sigterm(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agpt.cli", "dashboard"], cwd=REPO_ROOT, stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "AGPT_DATABASE_URL": db_url, "AGPT_DASHBOARD_PORT": str(port)})
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/_stcore/health") == 200,
                 timeout_s=90, what="the dashboard to answer",
                 diagnose=lambda: (tmp_path / "dashboard.log").read_text())
        family = {process.pid} | _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
        wait_for(lambda: not any(_alive(pid) for pid in family), timeout_s=10,
                 what="every dashboard process to exit")
        assert http_status(f"http://127.0.0.1:{port}/_stcore/health") is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_assistant_stops_cleanly_on_sigterm(db_url: str, tmp_path: Path,
                                            model_cache_dir: Path) -> None:
    port = free_port()
    log_path = tmp_path / "assistant.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agpt.cli", "assistant", "--port", str(port)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "AGPT_DATABASE_URL": db_url, "OMP_NUM_THREADS": "1",
                 "AGPT_CACHE_DIR": str(model_cache_dir), "AGPT_TORCH_THREADS": "1"})
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/health") in (200, 503),
                 timeout_s=90, what="the assistant to answer", diagnose=log_path.read_text)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "assistant stopped" in log_path.read_text()
    assert http_status(f"http://127.0.0.1:{port}/health") is None


def test_demo_supervisor_stops_both_children_on_sigterm() -> None:
    # `agpt demo` runs the assistant and the dashboard under supervise(); two sleepers stand
    # in for them here (the dashboard and assistant themselves are tested above).
    script = (
        "import os, sys\n"
        "from agpt.review_commands import supervise\n"
        "child = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
        "sys.exit(supervise([(child, dict(os.environ)), (child, dict(os.environ))]))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    try:
        wait_for(lambda: len(_children(process.pid)) == 2, timeout_s=30,
                 what="the two supervised children")
        children = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        wait_for(lambda: not any(_alive(pid) for pid in children), timeout_s=10,
                 what="the supervised children to exit")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
