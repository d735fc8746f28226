"""Bulk rows for benchmarks: many frames and verdicts in a few statements. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

from storage.verdicts import VerdictRecord, record_verdicts

FLAGGED_ANSWER = "Yes, there is an anomaly in the image, at the top left of the image."
NORMAL_ANSWER = "No, there is no anomaly in the image."

# One INSERT ... SELECT per table: 10^5 rows in seconds instead of minutes of executemany.
_POSTGRES_FRAMES = text("""
INSERT INTO frames (camera_id, frame_id, product, captured_at, received_at, image, metadata)
SELECT cams[1 + i % cardinality(cams)], :prefix || i,
       prods[1 + (i / 7) % cardinality(prods)], t, t,
       CASE WHEN i % :flagged_every = 0 THEN CAST(:image AS bytea) END, '{}'::jsonb
FROM generate_series(0, CAST(:count AS bigint) - 1) AS i,
     LATERAL (SELECT CAST(:start AS timestamptz)
                     + i * interval '1 second' * CAST(:spacing_s AS float8) AS t) AS times,
     (SELECT CAST(:cameras AS text[]) AS cams, CAST(:products AS text[]) AS prods) AS names
""")
_POSTGRES_VERDICTS = text("""
INSERT INTO verdicts (frame_pk, camera_id, product, score, threshold, anomalous, positions,
                      answer, mask_png,
                      heatmap_png, heatmap_min, heatmap_max, model_id, latency_ms, worker,
                      details, created_at)
SELECT f.id, f.camera_id, f.product, CASE WHEN f.i % :flagged_every = 0 THEN 1.2 + (f.i % 97) / 50.0
                  ELSE 0.2 + (f.i % 89) / 200.0 END,
       1.0, f.i % :flagged_every = 0,
       CASE WHEN f.i % :flagged_every = 0 THEN '["top left"]'::jsonb ELSE '[]'::jsonb END,
       CASE WHEN f.i % :flagged_every = 0 THEN CAST(:flagged_answer AS text)
            ELSE CAST(:normal_answer AS text) END,
       CASE WHEN f.i % :flagged_every = 0 THEN CAST(:mask AS bytea) END,
       CASE WHEN f.i % :flagged_every = 0 THEN CAST(:heatmap AS bytea) END,
       0.0, 2.0, 'bench', 40.0, 'bench-worker', '{"pool_version": 1}'::jsonb, f.captured_at
FROM (SELECT id, camera_id, product, captured_at, substr(frame_id, length(:prefix) + 1)::bigint AS i
      FROM frames WHERE frame_id LIKE :prefix || '%') AS f
""")


def insert_synthetic_verdicts(*, session: Session, count: int, image_png: bytes,
                              mask_png: bytes, heatmap_png: bytes,
                              cameras: Sequence[str] = ("cam-1", "cam-2", "cam-3", "cam-4"),
                              products: Sequence[str] = ("bottle", "textile"),
                              flagged_every: int = 10, spacing_s: float = 1.0,
                              prefix: str = "bench-", start: datetime | None = None) -> int:
    """Insert ``count`` frames with verdicts for a benchmark.

    Every ``flagged_every``-th is flagged and keeps an image, a mask and a heatmap (the others
    keep none, as the worker's default policy).

    Verdict times are ``start`` + i * ``spacing_s`` (default: ending now). PostgreSQL gets
    two set-based statements; other backends go through :func:`record_verdicts` in batches.

    Returns:
        The number of verdicts inserted.
    """
    if start is None:
        start = datetime.now(UTC) - timedelta(seconds=count * spacing_s)
    if session.get_bind().dialect.name == "postgresql":
        params = {"cameras": list(cameras), "products": list(products), "prefix": prefix,
                  "start": start, "spacing_s": spacing_s, "flagged_every": flagged_every,
                  "count": count, "image": image_png, "mask": mask_png, "heatmap": heatmap_png,
                  "flagged_answer": FLAGGED_ANSWER, "normal_answer": NORMAL_ANSWER}
        session.execute(_POSTGRES_FRAMES, params)
        result = session.execute(_POSTGRES_VERDICTS, params)
        return int(cast(CursorResult[Any], result).rowcount)
    inserted = 0
    template = VerdictRecord(
        camera_id="", frame_id="", product="", captured_at=start, image=None, image_uri=None,
        metadata={}, score=0.0, threshold=1.0, anomalous=False, positions=[], answer="",
        mask_png=None, model_id="bench", latency_ms=40.0, worker="bench-worker",
        details={"pool_version": 1}, heatmap_min=0.0, heatmap_max=2.0)
    for first in range(0, count, 2000):
        batch = []
        for i in range(first, min(count, first + 2000)):
            flagged = i % flagged_every == 0
            batch.append(replace(
                template, camera_id=cameras[i % len(cameras)], frame_id=f"{prefix}{i}",
                product=products[(i // 7) % len(products)],
                captured_at=start + timedelta(seconds=i * spacing_s),
                image=image_png if flagged else None, anomalous=flagged,
                score=1.2 + (i % 97) / 50 if flagged else 0.2 + (i % 89) / 200,
                positions=["top left"] if flagged else [],
                answer=FLAGGED_ANSWER if flagged else NORMAL_ANSWER,
                mask_png=mask_png if flagged else None,
                heatmap_png=heatmap_png if flagged else None))
        inserted += record_verdicts(session=session, records=batch)
    return inserted
