"""UtcDateTime stores instants, not wall-clock readings, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from storage.types import UtcDateTime, utcnow

PARIS_SUMMER = timezone(timedelta(hours=2))


def test_sqlite_binds_naive_utc() -> None:
    value = datetime(2025, 6, 1, 14, 0, tzinfo=PARIS_SUMMER)

    bound = UtcDateTime().process_bind_param(value, sqlite.dialect())

    assert bound == datetime(2025, 6, 1, 12, 0)


def test_postgres_binds_aware_utc() -> None:
    value = datetime(2025, 6, 1, 14, 0, tzinfo=PARIS_SUMMER)

    bound = UtcDateTime().process_bind_param(value, postgresql.dialect())

    assert bound == value
    assert bound is not None
    assert bound.tzinfo == UTC


def test_naive_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().process_bind_param(datetime(2025, 1, 1), sqlite.dialect())  # noqa: DTZ001


@pytest.mark.parametrize(
    "stored",
    [datetime(2025, 6, 1, 12, 0), datetime(2025, 6, 1, 14, 0, tzinfo=PARIS_SUMMER)],  # noqa: DTZ001
)
def test_results_are_aware_utc(stored: datetime) -> None:
    loaded = UtcDateTime().process_result_value(stored, sqlite.dialect())

    assert loaded == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert loaded is not None
    assert loaded.tzinfo == UTC


def test_none_passes_through() -> None:
    assert UtcDateTime().process_bind_param(None, sqlite.dialect()) is None
    assert UtcDateTime().process_result_value(None, sqlite.dialect()) is None


def test_utcnow_is_aware() -> None:
    assert utcnow().tzinfo == UTC
