"""Aware UTC datetimes in, unix seconds out; naive values from SQLite are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from inference_club.domain.clock import as_utc, unix, utcnow


def test_naive_values_are_read_as_utc_and_aware_ones_kept() -> None:
    naive = datetime(2026, 1, 1, 12, 0, 0)
    assert as_utc(naive) == datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    paris = datetime(2026, 1, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(paris) is paris
    assert unix(naive) == unix(paris) == 1767268800
    assert unix(None) is None


def test_now_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = utcnow()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)
