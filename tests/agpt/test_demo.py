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
    assert main(["demo", "--frames", "24", "--shots", "4", "--no-dashboard",
                 "--json", str(summary_path)]) == 0

    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 24
    assert summary["kinds"] == {"nominal": 18, "local": 3, "global": 3}
    # Texture-statistics defects are caught by the image-level check.
    assert summary["caught"].get("global", 0) >= 2
    factory = make_session_factory(make_engine(f"sqlite:///{database}"))
    with factory() as session:
        assert repositories.count_verdicts(session=session) == 24
        flagged = repositories.count_verdicts(session=session, anomalous=True)
        assert flagged == summary["flagged"]
        views = repositories.list_verdicts(session=session, anomalous=True, limit=5)
        image, mask = repositories.get_verdict_images(session=session, verdict_id=views[0].id)
    assert image is not None
    assert views[0].answer.startswith("Yes, there")
    output = capsys.readouterr().out
    assert "frames processed : 24" in output
