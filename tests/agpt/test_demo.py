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


def test_demo_profile_flags_local_defects_and_keeps_nominal_frames(model_cache_dir,
                                                                   one_torch_thread):
    # The demo's own line (default profile, pool and frames of `agpt demo --frames 40`),
    # scored by the detector at its calibrated threshold. The ~10-px local defects score
    # 0.35-0.43; copies of the references that no camera shows (the seams of wrapped shifts,
    # the mirrored corners of rotations, poses the line never has) once put the threshold
    # at 0.86 and none of them was flagged.
    from PIL import Image

    from agpt.demo import PROFILE, plan_line
    from inference.profiles import build_detector, get_profile

    detector = build_detector(get_profile(PROFILE), cache_dir=model_cache_dir)
    plan = plan_line(frames=40, shots=6)
    memory = detector.set_references("textile", [Image.open(p) for p in plan.pool])
    flagged: dict[str, list[bool]] = {}
    for path, kind in plan.stream:
        if kind != "global":  # texture-statistics defects: the global check's (test above)
            detection = detector.detect("textile", [Image.open(path)])[0]
            flagged.setdefault(kind, []).append(detection.anomalous)
    assert len(flagged["local"]) == 5
    assert len(flagged["nominal"]) == 30
    assert sum(flagged["local"]) >= 4, memory.calibration
    # Configured for 1 % false alarms: 0.3 of 30 expected; more than two would be a broken bound.
    assert sum(flagged["nominal"]) <= 2, memory.calibration
