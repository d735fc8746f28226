"""`agpt demo` end to end: wheel images → in-process transport → worker → SQLite."""

import json

import pytest

from agpt.cli import main
from storage import repositories
from storage.engine import make_engine, make_session_factory

pytestmark = pytest.mark.slow


def test_demo_streams_frames_to_verdicts(tmp_path, model_cache_dir, monkeypatch, capsys):
    database = tmp_path / "demo.sqlite"
    monkeypatch.setenv("AGPT_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("AGPT_CACHE_DIR", str(model_cache_dir))
    monkeypatch.setenv("AGPT_PROFILE", "cpu-small")  # 224 px keeps the test short
    summary_path = tmp_path / "summary.json"
    assert main(["demo", "--frames", "40", "--shots", "5", "--no-dashboard",
                 "--json", str(summary_path)]) == 0

    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 40
    assert summary["kinds"] == {"nominal": 30, "local": 5, "global": 5}
    # Texture-statistics defects are caught by the image-level check (4 of these 5 when
    # measured; at 224 px a few sit near the bound of a five-image pool).
    assert summary["caught"].get("global", 0) >= 3
    factory = make_session_factory(make_engine(f"sqlite:///{database}"))
    with factory() as session:
        assert repositories.count_verdicts(session=session) == 40
        flagged = repositories.count_verdicts(session=session, anomalous=True)
        assert flagged == summary["flagged"]
        views = repositories.list_verdicts(session=session, anomalous=True, limit=5)
        image, mask = repositories.get_verdict_images(session=session, verdict_id=views[0].id)
    assert image is not None
    assert views[0].answer.startswith("Yes, there")
    output = capsys.readouterr().out
    assert "frames processed : 40" in output
    # The demo's operator and engineer accounts, with the passwords printed once.
    logins = dict(line.split()[1:4:2] for line in output.splitlines()
                  if line.strip().startswith("login"))
    assert set(logins) == {"operator", "engineer"}
    with factory() as session:
        for name, password in logins.items():
            assert repositories.authenticate(session=session, name=name,
                                             password=password).role == name
