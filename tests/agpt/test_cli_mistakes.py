"""A user's mistake is one line on stderr and exit status 2, never a traceback.

Each command is run with its typical mistakes (missing or unreadable files, unknown profile
or product, bad settings, unreachable database, a database that is not migrated); tracebacks
stay for bugs and for ``--debug``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from agpt.cli import main
from storage.migrate import head_revision
from tests.fixtures.database import created_postgres_database

ROOT = Path(__file__).resolve().parents[2]
NO_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
NO_BROKER = "127.0.0.1:1"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A PNG, a text file, an MVTec-layout folder with one category and a SQLite URL."""
    png = tmp_path / "part.png"
    Image.new("RGB", (32, 32), (120, 120, 120)).save(png)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    good = tmp_path / "mvtec" / "bolt" / "train" / "good"
    good.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(good / "000.png")
    synth = tmp_path / "synth"
    (synth / "brick").mkdir(parents=True)
    (synth / "brick" / "old.png").write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"png": str(png), "text": str(text), "mvtec": str(tmp_path / "mvtec"),
            "synth": str(synth), "empty": str(empty), "missing": str(tmp_path / "missing"),
            "sqlite": f"sqlite:///{tmp_path / 'cli.sqlite'}"}


MISTAKES = {
    # command: (argv with {placeholders}, what the line must say)
    "eval: missing data": (["eval", "--data", "{missing}"], "no such directory"),
    "eval: not an MVTec layout": (["eval", "--data", "{empty}"], "train/good"),
    "eval: unknown category": (["eval", "--data", "{mvtec}", "--categories", "screw"],
                               "screw"),
    "eval: missing baseline report": (
        ["eval", "--data", "{mvtec}", "--against", "{missing}"], "--against"),
    "eval: baseline is not a report": (
        ["eval", "--data", "{mvtec}", "--against", "{text}"], "not JSON"),
    "eval: unknown profile": (["--profile", "nope", "eval", "--data", "{mvtec}"],
                              "unknown model profile 'nope'"),
    "bench model: unknown profile": (["bench", "model", "--profile", "nope"], "nope"),
    "bench model: random weights of a CPU profile": (
        ["bench", "model", "--random-weights", "--device", "cpu"], "--profile anomalygpt-7b"),
    "bench model: random weights, bad batch sizes": (
        ["bench", "model", "--profile", "anomalygpt-7b", "--random-weights", "--device", "cpu",
         "--batch-sizes", "8,x"], "--batch-sizes"),
    "demo: unknown profile": (["demo", "--profile", "nope", "--no-dashboard",
                               "--database-url", "{sqlite}"], "nope"),
    "worker: no broker": (["worker", "--database-url", "{sqlite}"], "needs a broker"),
    "worker: unreachable database": (["worker", "--kafka-bootstrap", NO_BROKER,
                                      "--database-url", NO_DATABASE, "--metrics-port", "0"],
                                     "cannot reach the database"),
    "pool add: missing file": (["pool", "add", "--product", "p", "{missing}",
                                "--database-url", "{sqlite}"], "nothing added"),
    "pool add: not an image": (["pool", "add", "--product", "p", "{text}",
                                "--database-url", "{sqlite}"], "notes.txt"),
    "pool add: no product": (["pool", "add", "{png}"], "--product"),
    "pool remove: unknown entry": (["pool", "remove", "99", "--database-url", "{sqlite}"],
                                   "pool entry 99 does not exist"),
    "pool list: unreachable database": (["pool", "list", "--product", "p",
                                         "--database-url", NO_DATABASE],
                                        "cannot reach the database"),
    "ingest: no broker": (["ingest", "{empty}", "--product", "p"], "needs a broker"),
    "ingest: missing folder": (["ingest", "{missing}", "--product", "p",
                                "--kafka-bootstrap", NO_BROKER], "no such file"),
    "ingest: no product": (["ingest", "{empty}", "--kafka-bootstrap", NO_BROKER],
                           "needs --product"),
    "ingest: unknown source": (["ingest", "{empty}", "--source", "ftp"], "invalid choice"),
    "dashboard: unreachable database": (["dashboard", "--database-url", NO_DATABASE],
                                        "cannot reach the database"),
    "db upgrade: unreachable database": (["db", "upgrade", "--database-url", NO_DATABASE],
                                         "cannot reach the database"),
    "data synth: existing set": (["data", "synth", "--out", "{synth}"], "--overwrite"),
    "chat: missing references": (["chat", "{png}", "--product", "p", "--refs", "{missing}"],
                                 "no such directory"),
    "chat: missing image": (["chat", "{missing}", "--product", "p", "--refs", "{mvtec}/bolt/"
                             "train/good"], "no such file"),
    "model check: nothing to check": (["model", "check"], "at least one"),
    "model check: missing file": (["model", "check", "--llm", "{missing}"], "no such file"),
    "unknown command": (["tarin"], "invalid choice"),
    "bad number": (["bench", "model", "--seconds", "ten"], "invalid float"),
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status (also from argparse's SystemExit) and stderr of one CLI run."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


def assert_one_line(status: int, err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0]


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_each_typical_mistake_is_one_line_and_exit_2(case, files, capsys):
    argv, expected = MISTAKES[case]
    status, err = run([arg.format(**files) for arg in argv], capsys)
    assert_one_line(status, err, expected)


def test_a_bad_setting_in_the_environment_names_the_variable(files, capsys, monkeypatch):
    monkeypatch.setenv("AGPT_BATCH_SIZE", "eight")
    status, err = run(["pool", "list", "--product", "p", "--database-url", files["sqlite"]],
                      capsys)
    assert_one_line(status, err, "AGPT_BATCH_SIZE")


def test_the_console_script_prints_no_traceback_unless_debug(tmp_path):
    command = [sys.executable, "-m", "agpt.cli", "eval", "--data", str(tmp_path / "none")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                           check=False)
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"agpt: --data {tmp_path / 'none'}: no such directory (an MVTec-AD layout; "
        "`agpt data synth --out DIR` builds one)"]
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


@pytest.mark.postgres
def test_a_worker_on_an_unmigrated_postgres_database_refuses_to_start(postgres_admin_url):
    with created_postgres_database(postgres_admin_url) as url:
        done = subprocess.run(
            [sys.executable, "-m", "agpt.cli", "worker", "--database-url", url,
             "--kafka-bootstrap", NO_BROKER, "--metrics-port", "0"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "not migrated" in line
    assert head_revision() in line
    assert "run `agpt db upgrade`" in line
