"""Time helpers: aware UTC datetimes everywhere, unix seconds on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def unix(value: datetime | None) -> int | None:
    return None if value is None else int(as_utc(value).timestamp())
