"""Usage rows, written in batches by the background recorder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import UsageRecord


async def insert_usage(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(UsageRecord), list(rows))


async def recent_usage(session: AsyncSession, *, user_id: str, limit: int = 100) -> Sequence[UsageRecord]:
    query = (
        select(UsageRecord)
        .where(UsageRecord.user_id == user_id)
        .order_by(UsageRecord.id.desc())
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()
