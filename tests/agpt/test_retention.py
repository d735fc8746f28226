"""`agpt retention run`: what is due goes, unreviewed-flagged and pooled frames never do, a
re-run deletes nothing more, and two concurrent runs delete each blob exactly once."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agpt.retention import run_retention
from agpt.settings import RetentionPolicy
from ingest.blobstore import BlobNotFoundError, LocalBlobStore
from storage.models import Frame, Verdict
from storage.repositories import add_pool_entry, record_verdicts
from tests.storage.factories import make_record, png_bytes

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(normal_image_days=7, flagged_image_days=90, verdict_days=365)


class CountingStore:
    """A real local blob store that also counts deletes per URI (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.store = LocalBlobStore(root)
        self.deletes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def delete(self, uri: str) -> None:
        with self._lock:
            self.deletes[uri] += 1
        self.store.delete(uri)


def _add(session: Session, store: LocalBlobStore, name: str, *, days: float,
         anomalous: bool, reviewed: bool = False, pooled: bool = False,
         product: str = "bottle", blob: bytes | None = None) -> None:
    digest = hashlib.sha256(name.encode()).digest()
    data = blob if blob is not None else png_bytes((digest[0], digest[1], digest[2]), size=8)
    uri = store.put(data)
    record_verdicts(session=session, records=[make_record(
        0, frame_id=name, product=product, anomalous=anomalous, image=None, image_uri=uri)])
    frame_pk = session.scalar(select(Frame.id).where(Frame.frame_id == name))
    session.execute(update(Frame).where(Frame.id == frame_pk)
                    .values(received_at=NOW - timedelta(days=days)))
    if reviewed:  # what review_verdict records (without its user and audit machinery)
        session.execute(update(Verdict).where(Verdict.frame_pk == frame_pk)
                        .values(review="defect", reviewed_by="ana", reviewed_at=NOW))
    if pooled:
        add_pool_entry(session=session, product=product, image_png=data, source="review",
                       added_by="ana", frame_pk=frame_pk)


def _state(session_factory: sessionmaker[Session]) -> dict[str, str | None]:
    """frame_id -> image URI (None: image released); absent frames were deleted."""
    with session_factory() as session:
        return dict(session.execute(select(Frame.frame_id, Frame.image_uri)).all())


def _seed(session_factory: sessionmaker[Session], store: LocalBlobStore) -> dict[str, str]:
    with session_factory.begin() as session:
        _add(session, store, "normal-10d", days=10, anomalous=False)
        _add(session, store, "normal-2d", days=2, anomalous=False)
        _add(session, store, "flagged-unreviewed-400d", days=400, anomalous=True)
        _add(session, store, "flagged-reviewed-100d", days=100, anomalous=True, reviewed=True)
        _add(session, store, "flagged-reviewed-30d", days=30, anomalous=True, reviewed=True)
        _add(session, store, "pooled-400d", days=400, anomalous=False, pooled=True)
        _add(session, store, "normal-400d", days=400, anomalous=False)
        _add(session, store, "flagged-reviewed-400d", days=400, anomalous=True, reviewed=True)
        _add(session, store, "screw-normal-10d", days=10, anomalous=False, product="screw")
    return {k: v for k, v in _state(session_factory).items() if v is not None}


def _run(session_factory, store: CountingStore, **kwargs):
    return run_retention(session_factory=session_factory, delete_blob=store.delete,
                         default=POLICY, now=NOW,
                         products={"screw": RetentionPolicy(normal_image_days=None)}, **kwargs)


@pytest.fixture
def session_factory(database_engine) -> sessionmaker[Session]:
    from storage.engine import make_session_factory

    return make_session_factory(database_engine)


def test_deletes_only_what_is_due_and_a_rerun_deletes_nothing(session_factory, tmp_path):
    store = CountingStore(tmp_path / "blobs")
    uris = _seed(session_factory, store.store)

    report = _run(session_factory, store, batch_size=2)

    assert _state(session_factory) == {
        "normal-10d": None,  # image past 7 days
        "normal-2d": uris["normal-2d"],
        "flagged-unreviewed-400d": uris["flagged-unreviewed-400d"],  # never, unreviewed
        "flagged-reviewed-100d": None,  # image past 90 days, row within 365
        "flagged-reviewed-30d": uris["flagged-reviewed-30d"],
        "pooled-400d": uris["pooled-400d"],  # never, in a pool
        "screw-normal-10d": uris["screw-normal-10d"],  # screw keeps normal images forever
    }
    gone = {"normal-10d", "flagged-reviewed-100d", "normal-400d", "flagged-reviewed-400d"}
    assert set(store.deletes) == {uris[name] for name in gone}
    for name in gone:
        with pytest.raises(BlobNotFoundError):
            store.store.read(uris[name], max_bytes=10_000)
    for name in set(uris) - gone:
        assert store.store.read(uris[name], max_bytes=10_000)
    assert (report.normal_images, report.flagged_images, report.frames) == (1, 1, 2)

    again = _run(session_factory, store, batch_size=2)

    assert (again.normal_images, again.flagged_images, again.frames, again.blobs_deleted) == (
        0, 0, 0, 0)
    assert all(count == 1 for count in store.deletes.values())


def test_dry_run_counts_and_changes_nothing(session_factory, tmp_path):
    store = CountingStore(tmp_path / "blobs")
    _seed(session_factory, store.store)
    before = _state(session_factory)

    dry = _run(session_factory, store, dry_run=True)

    assert _state(session_factory) == before
    assert not store.deletes
    real = _run(session_factory, store)
    assert (dry.normal_images, dry.flagged_images, dry.frames) == (
        real.normal_images, real.flagged_images, real.frames)


def test_a_blob_two_frames_share_goes_with_the_last_of_them(session_factory, tmp_path):
    store = CountingStore(tmp_path / "blobs")
    shared = png_bytes((1, 2, 3))
    with session_factory.begin() as session:
        _add(session, store.store, "old", days=10, anomalous=False, blob=shared)
        _add(session, store.store, "new", days=1, anomalous=False, blob=shared)

    _run(session_factory, store)
    assert not store.deletes  # "new" still keeps it

    run_retention(session_factory=session_factory, delete_blob=store.delete, default=POLICY,
                  products={}, now=NOW + timedelta(days=30))
    assert sum(store.deletes.values()) == 1


@pytest.mark.postgres
def test_two_concurrent_runs_delete_each_blob_once(postgres_database_url, tmp_path, request):
    from storage.engine import make_engine, make_session_factory
    from storage.models import Base

    with request.getfixturevalue("_postgres_cleaner").begin() as connection:
        connection.exec_driver_sql("TRUNCATE " + ", ".join(
            t.name for t in Base.metadata.sorted_tables) + " RESTART IDENTITY CASCADE")
    engine = make_engine(postgres_database_url)
    factory = make_session_factory(engine)
    store = CountingStore(tmp_path / "blobs")
    with factory.begin() as session:
        for i in range(240):
            # The first 120 frames share their blobs in pairs; some are flagged and reviewed,
            # some flagged unreviewed (kept), some whole rows expire.
            blob_id = i // 2 if i < 120 else i
            blob = png_bytes((blob_id % 256, blob_id // 256, 9), size=8)
            _add(session, store.store, f"f-{i}", days=400 if i % 4 == 0 else 20,
                 anomalous=i % 5 == 0, reviewed=i % 10 == 0, blob=blob)
    expected = _state(factory)
    # Unreviewed flagged frames, and reviewed flagged ones within their 90 days.
    kept = {n for n in expected if int(n[2:]) % 5 == 0
            and (int(n[2:]) % 10 != 0 or int(n[2:]) % 4 != 0)}
    start = threading.Barrier(2)
    reports = []
    errors = []

    def run() -> None:
        try:
            start.wait()
            reports.append(_run(factory, store, batch_size=7))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    engine.dispose()

    assert errors == []
    assert all(count == 1 for count in store.deletes.values()), store.deletes.most_common(3)
    state = _state(factory)
    assert {n for n, uri in state.items() if uri is not None} == kept
    released_or_gone = set(expected) - kept
    assert set(store.deletes) == {expected[n] for n in released_or_gone} - {
        expected[n] for n in kept}
    assert sum(r.normal_images + r.flagged_images + r.frames for r in reports) == len(
        released_or_gone)


def test_command_dry_run_prints_counts_and_refuses_a_bad_batch_size(
        tmp_path, monkeypatch, capsys):
    from agpt.cli import main
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'agpt.sqlite'}"
    upgrade(url)
    monkeypatch.setenv("AGPT_DATABASE_URL", url)
    monkeypatch.setenv("AGPT_BLOB_STORE", str(tmp_path / "blobs"))
    monkeypatch.setenv("AGPT_RETENTION_PRODUCTS", '{"screw": {"normal_image_days": 1}}')

    assert main(["retention", "run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"dry_run": true' in out
    assert '"screw"' in out
    assert main(["retention", "run", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
