"""Synthetic line data for `agpt bench storage`: a year on a line, filled in bulk.

A year on a line in set-based SQL (``generate_series``): frame ``i`` and verdict ``i`` share
the id ``i``, arrive ``step_s`` apart from ``t0``, ~3 % flagged with a blob-store URI and
hash (no image bytes), flagged frames older than two days reviewed. PostgreSQL only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import Session

from storage.models import Frame

CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class SyntheticLine:
    """Shape of the generated line."""

    rows_per_year: int = 10_000_000
    cameras: int = 12
    products: int = 4
    flagged_percent: int = 3
    t0: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))

    @property
    def step_s(self) -> float:
        """Seconds between two verdicts."""
        return 365 * 86400 / self.rows_per_year


def _statements(line: SyntheticLine) -> tuple[str, str]:
    flagged = f"abs(hashint8(i) % 100) < {line.flagged_percent}"
    at = f"make_interval(secs => (i * {line.step_s})::float8)"
    camera = f"'cam-' || lpad((i % {line.cameras})::text, 2, '0')"
    product = f"'product-' || (i % {line.cameras} % {line.products})"
    frames = f"""
INSERT INTO frames (id, camera_id, frame_id, product, captured_at, received_at, image,
                    image_uri, image_sha256, metadata)
SELECT i, {camera}, 'f-' || i, {product}, :t0 + {at} - interval '40 ms', :t0 + {at}, NULL,
       CASE WHEN {flagged} THEN 's3://bench/' || md5(i::text) END,
       CASE WHEN {flagged} THEN md5(i::text) END, jsonb_build_object('line', i % 3)
FROM generate_series(:start, :stop - 1) AS i
"""
    verdicts = f"""
INSERT INTO verdicts (id, frame_pk, camera_id, product, score, threshold, anomalous,
                      positions, answer, mask_png, model_id, latency_ms, worker, details,
                      created_at)
SELECT i, i, {camera}, {product},
       CASE WHEN {flagged} THEN 0.6 + 0.4 * random() ELSE 0.5 * random() END, 0.5, {flagged},
       CASE WHEN {flagged} THEN '["top left"]'::jsonb ELSE '[]'::jsonb END,
       CASE WHEN {flagged} THEN 'Yes, there is an anomaly.' ELSE 'No, there is no anomaly.' END,
       NULL, 'bench', 40.0, 'bench-0', '{{}}'::jsonb, :t0 + {at} + interval '60 ms'
FROM generate_series(:start, :stop - 1) AS i
"""
    return frames, verdicts


def fill_line(*, engine: Engine, line: SyntheticLine, rows: int) -> None:
    """Fill an empty, migrated database with ``rows`` frames and verdicts of ``line``.

    Foreign-key triggers are off for the load (``session_replication_role = replica``; the
    rows are consistent by construction); every index is maintained as in production. Ends
    with ``VACUUM ANALYZE`` and a ``CHECKPOINT`` (what autovacuum and the checkpointer do in
    production between bursts), so later measurements are not about the load's write-back.
    """
    frames, verdicts = _statements(line)
    for chunk in range(1, rows + 1, CHUNK_ROWS):
        bounds = {"start": chunk, "stop": min(rows + 1, chunk + CHUNK_ROWS), "t0": line.t0}
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            connection.execute(text(frames), bounds)
            connection.execute(text(verdicts), bounds)
    newest = line.t0 + timedelta(seconds=rows * line.step_s)
    with engine.begin() as connection:
        connection.execute(text(
            "UPDATE verdicts SET reviewed_at = created_at + interval '1 hour', review = 'defect',"
            " reviewed_by = 'bench' WHERE anomalous AND reviewed_at IS NULL AND created_at < :c"),
            {"c": newest - timedelta(days=2)})
        for table in ("frames", "verdicts"):
            connection.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), {"n": rows + 1})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE frames")
        connection.exec_driver_sql("VACUUM ANALYZE verdicts")
        connection.exec_driver_sql("CHECKPOINT")


def delete_frames_named(*, session: Session, prefix: str) -> int:
    """Delete the frames (and their verdicts) whose frame id starts with ``prefix``."""
    result = session.execute(delete(Frame).where(Frame.frame_id.startswith(prefix)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def table_sizes_mb(*, engine: Engine) -> dict[str, float]:
    """Heap and index sizes of frames and verdicts in MiB (PostgreSQL)."""
    sizes: dict[str, float] = {}
    with engine.connect() as connection:
        for table in ("frames", "verdicts"):
            heap, indexes = connection.execute(text(
                "SELECT pg_table_size(CAST(:t AS regclass)), "
                "pg_indexes_size(CAST(:t AS regclass))"), {"t": table}).one()
            sizes[f"{table}_table_mb"] = round(heap / 2**20, 1)
            sizes[f"{table}_indexes_mb"] = round(indexes / 2**20, 1)
    return sizes
