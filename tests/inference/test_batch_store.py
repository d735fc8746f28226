"""A row the database refuses is isolated; the rest of its batch is stored (real PostgreSQL).

The rows here bypass the envelope's checks on purpose: they are what reached the database
before the limits were aligned, and what any future drift would let through.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError

from inference.batch_store import DatabaseRejectedError, store_batch
from storage.engine import make_engine, make_session_factory
from storage.models import Frame
from storage.write_errors import classify_write_error
from tests.storage.factories import make_record

pytestmark = pytest.mark.postgres

OFFENDERS = {
    "nul_camera": dict(camera_id="cam\x00-1"),
    "nul_product": dict(product="bott\x00le"),
    "camera_200": dict(camera_id="c" * 200),
    "nan_metadata": dict(metadata={"v": float("nan")}),
    "nul_metadata": dict(metadata={"lot": "a\u0000b"}),
    "surrogate_camera": dict(camera_id="cam-\udc80"),
    "year_one_plus_5": dict(captured_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_only_the_offenders_are_refused_and_each_names_its_cause(database_url):
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    rows, expected = [], {}
    for index, (kind, fields) in enumerate(OFFENDERS.items()):
        rows.append(make_record(100 + index))
        expected[len(rows)] = kind
        rows.append(make_record(200 + index, **fields))
    rows.append(make_record(999))

    inserted, refused = store_batch(session_factory=factory, rows=rows)

    assert {index: expected[index] for index in refused} == expected
    assert inserted == len(rows) - len(OFFENDERS)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Frame)) == inserted
    codes = {expected[i]: (f.sqlstate, f.error_class) for i, f in refused.items()}
    assert codes["camera_200"] == ("22001", "StringDataRightTruncation")
    assert codes["nul_metadata"][0] == "22P05"  # untranslatable character (\u0000 in JSONB)
    assert codes["nan_metadata"][0] is not None
    assert codes["nan_metadata"][0][:2] == "22"
    assert codes["surrogate_camera"][1] in ("UnicodeEncodeError", "DataError")
    for failure in refused.values():
        assert failure.permanent
        message = str(DatabaseRejectedError(failure))
        message.encode("utf-8")
        assert "\x00" not in message
    engine.dispose()


def test_connection_failures_are_transient_and_pass_through():
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none",
                           connect_args={"connect_timeout": 1})
    factory = make_session_factory(engine)
    with pytest.raises(OperationalError) as info:
        store_batch(session_factory=factory, rows=[make_record(1)])
    assert not classify_write_error(info.value).permanent
    engine.dispose()
