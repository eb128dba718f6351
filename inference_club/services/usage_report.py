"""Usage reports: a user's requests aggregated by day and model, or by hour."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from inference_club.domain.clock import utcnow
from inference_club.store import usage as q
from inference_club.store.db import Database

MAX_DAYS = 90
_EMPTY = {
    "requests": 0,
    "errors": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "latency_ms_p50": None,
}


def _public(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return dict(_EMPTY)
    p50 = row["latency_ms_p50"]
    return {
        "requests": int(row["requests"]),
        "errors": int(row["errors"] or 0),
        "prompt_tokens": int(row["prompt_tokens"] or 0),
        "completion_tokens": int(row["completion_tokens"] or 0),
        "total_tokens": int(row["total_tokens"] or 0),
        "latency_ms_p50": None if p50 is None else round(float(p50), 1),
    }


class UsageReports:
    def __init__(self, database: Database) -> None:
        self._db = database

    def __repr__(self) -> str:
        return "<UsageReports>"

    async def _totals(
        self, user_id: str, since: datetime, unit: str | None, per_model: bool
    ) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            return await q.usage_totals(session, user_id=user_id, since=since, unit=unit, per_model=per_model)

    async def by_day(self, user_id: str, *, days: int, now: datetime | None = None) -> dict[str, Any]:
        """Per UTC day and model: requests, errors, tokens, median latency; oldest day first."""
        now = now or utcnow()
        since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        rows = await self._totals(user_id, since, "day", per_model=True)
        total = await self._totals(user_id, since, None, per_model=False)
        data = [{"day": row["period"], "model": row["model"], **_public(row)} for row in rows]
        return {
            "object": "usage",
            "days": days,
            "since": since.date().isoformat(),
            "data": data,
            "total": _public(total[0] if total else None),
        }

    async def by_hour(self, user_id: str, *, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
        """The last ``hours`` hours, one entry per hour (empty hours included, oldest first;
        no per-hour median), and the totals of the whole window with its median latency."""
        now = now or utcnow()
        start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
        async with self._db.read() as session:
            rows = await q.usage_totals(
                session, user_id=user_id, since=start, unit="hour", per_model=False, with_median=False
            )
            found = {row["period"]: row for row in rows}
            total = _public(
                {
                    "requests": sum(r["requests"] for r in rows),
                    "errors": sum(r["errors"] or 0 for r in rows),
                    "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
                    "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
                    "total_tokens": sum(r["total_tokens"] or 0 for r in rows),
                    "latency_ms_p50": None,
                }
            )
            median = await q.latency_median(session, user_id=user_id, since=start, count=total["requests"])
        total["latency_ms_p50"] = None if median is None else round(median, 1)
        out = []
        for i in range(hours):
            hour = start + timedelta(hours=i)
            out.append({"hour": hour.isoformat(), **_public(found.get(hour.strftime("%Y-%m-%dT%H")))})
        return {"hours": out, "total": total}
