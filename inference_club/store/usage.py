"""Usage rows, written in batches by the background recorder."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, case, func, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import UsageRecord

_USAGE_TABLE = cast(Table, UsageRecord.__table__)


async def insert_usage(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        # The table, not the ORM class: a plain executemany, without the ORM's bulk bookkeeping.
        await session.execute(insert(_USAGE_TABLE), list(rows))


async def recent_usage(session: AsyncSession, *, user_id: str, limit: int = 100) -> Sequence[UsageRecord]:
    query = (
        select(UsageRecord).where(UsageRecord.user_id == user_id).order_by(UsageRecord.id.desc()).limit(limit)
    )
    return (await session.execute(query)).scalars().all()


def _period(session: AsyncSession, unit: str) -> Any:
    """The UTC hour (``2026-11-27T15``) or day (``2026-11-27``) of a usage row, as text."""
    if session.get_bind().dialect.name == "postgresql":
        utc = func.timezone("UTC", UsageRecord.created_at)
        return func.to_char(
            func.date_trunc(unit, utc), 'YYYY-MM-DD"T"HH24' if unit == "hour" else "YYYY-MM-DD"
        )
    # SQLite keeps UTC datetimes as ISO text.
    return func.strftime("%Y-%m-%dT%H" if unit == "hour" else "%Y-%m-%d", UsageRecord.created_at)


async def usage_totals(
    session: AsyncSession,
    *,
    user_id: str,
    since: datetime,
    unit: str | None,
    per_model: bool,
    with_median: bool = True,
) -> list[dict[str, Any]]:
    """Requests, errors, tokens and median latency of the user's rows since ``since``, grouped
    by ``unit`` (``hour``, ``day`` or None for the whole window) and optionally by model.

    Aggregated in the database (the median with window functions, which SQLite and
    PostgreSQL both have), so the cost does not grow with the rows in Python. Without
    ``with_median`` the (costlier) median is left out: ``latency_ms_p50`` is None.
    """
    period = _period(session, unit).label("period") if unit else literal("all").label("period")
    model = UsageRecord.model.label("model") if per_model else literal(None, String).label("model")
    partition = [period, model] if per_model else [period]
    if not with_median:
        plain = (
            select(
                period,
                model,
                func.count().label("requests"),
                func.sum(case((UsageRecord.status_code >= 400, 1), else_=0)).label("errors"),
                func.sum(func.coalesce(UsageRecord.prompt_tokens, 0)).label("prompt_tokens"),
                func.sum(func.coalesce(UsageRecord.completion_tokens, 0)).label("completion_tokens"),
                func.sum(func.coalesce(UsageRecord.total_tokens, 0)).label("total_tokens"),
                literal(None).label("latency_ms_p50"),
            )
            .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
            .group_by(*partition)
        )
        return [dict(row._mapping) for row in (await session.execute(plain.order_by(*partition))).all()]
    mine = (
        select(
            period,
            model,
            UsageRecord.latency_ms.label("latency"),
            UsageRecord.status_code.label("status"),
            func.coalesce(UsageRecord.prompt_tokens, 0).label("prompt"),
            func.coalesce(UsageRecord.completion_tokens, 0).label("completion"),
            func.coalesce(UsageRecord.total_tokens, 0).label("total"),
            func.row_number().over(partition_by=partition, order_by=UsageRecord.latency_ms).label("rank"),
            func.count().over(partition_by=partition).label("size"),
        )
        .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
        .subquery()
    )
    middle = or_(mine.c.rank == (mine.c.size + 1) // 2, mine.c.rank == (mine.c.size + 2) // 2)
    query = (
        select(
            mine.c.period,
            mine.c.model,
            func.count().label("requests"),
            func.sum(case((mine.c.status >= 400, 1), else_=0)).label("errors"),
            func.sum(mine.c.prompt).label("prompt_tokens"),
            func.sum(mine.c.completion).label("completion_tokens"),
            func.sum(mine.c.total).label("total_tokens"),
            (
                func.sum(case((middle, mine.c.latency), else_=0.0)) / func.sum(case((middle, 1), else_=0))
            ).label("latency_ms_p50"),
        )
        .group_by(mine.c.period, mine.c.model)
        .order_by(mine.c.period, mine.c.model)
    )
    return [dict(row._mapping) for row in (await session.execute(query)).all()]


async def latency_median(session: AsyncSession, *, user_id: str, since: datetime, count: int) -> float | None:
    """The median ``latency_ms`` of the user's ``count`` rows since ``since`` (one sorted read)."""
    if count <= 0:
        return None
    query = (
        select(UsageRecord.latency_ms)
        .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
        .order_by(UsageRecord.latency_ms)
        .offset((count - 1) // 2)
        .limit(1 if count % 2 else 2)
    )
    values = [float(v) for v in (await session.execute(query)).scalars().all()]
    return sum(values) / len(values) if values else None
