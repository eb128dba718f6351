"""Usage rows: batched inserts, per-user reads, totals by hour/day/model with the median latency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inference_club.store import usage as q
from tests.unit.store.conftest import Store

T0 = datetime(2026, 11, 27, 10, 5, tzinfo=UTC)


def row(
    user_id: str, *, at: datetime = T0, latency: float = 10.0, status: int = 200, model: str = "m"
) -> dict[str, Any]:
    return {
        "request_id": "r",
        "user_id": user_id,
        "key_id": None,
        "provider_id": None,
        "endpoint": "chat.completions",
        "model": model,
        "status_code": status,
        "error_type": None if status < 400 else "upstream_error",
        "latency_ms": latency,
        "ttft_ms": None,
        "prompt_tokens": 2,
        "completion_tokens": None if status >= 400 else 3,
        "total_tokens": None if status >= 400 else 5,
        "created_at": at,
    }


async def insert(store: Store, *rows: dict[str, Any]) -> None:
    async with store.db.transaction() as session:
        await q.insert_usage(session, rows=list(rows))


async def test_recent_usage_is_the_users_newest_rows(store: Store) -> None:
    await insert(store)  # no rows: no statement, no error
    await insert(store, *[row(store.alice, latency=float(i)) for i in range(5)], row(store.bob))
    async with store.db.read() as session:
        recent = await q.recent_usage(session, user_id=store.alice, limit=3)
        assert [r.latency_ms for r in recent] == [4.0, 3.0, 2.0]
        assert {r.user_id for r in await q.recent_usage(session, user_id=store.bob)} == {store.bob}


async def test_totals_by_hour_and_model_with_the_median(store: Store) -> None:
    hour2 = T0 + timedelta(hours=1)
    await insert(
        store,
        row(store.alice, latency=10),
        row(store.alice, latency=30),
        row(store.alice, latency=20, status=502),
        row(store.alice, latency=40, model="n"),
        row(store.alice, at=hour2, latency=7),
        row(store.alice, at=hour2, latency=9),
        row(store.alice, at=T0 - timedelta(days=2), latency=1000),  # before the window
        row(store.bob, latency=500),  # someone else's
    )
    since = T0 - timedelta(hours=1)
    async with store.db.read() as session:
        hourly = await q.usage_totals(session, user_id=store.alice, since=since, unit="hour", per_model=False)
        by_model = await q.usage_totals(session, user_id=store.alice, since=since, unit=None, per_model=True)
        daily = await q.usage_totals(session, user_id=store.alice, since=since, unit="day", per_model=False)
        cheap = await q.usage_totals(
            session, user_id=store.alice, since=since, unit="hour", per_model=False, with_median=False
        )
    assert [(h["period"], h["requests"], h["errors"], h["total_tokens"]) for h in hourly] == [
        ("2026-11-27T10", 4, 1, 15),
        ("2026-11-27T11", 2, 0, 10),
    ]
    assert [float(h["latency_ms_p50"]) for h in hourly] == [25.0, 8.0]  # even counts: mean of the middle two
    assert [(m["period"], m["model"], m["requests"], float(m["latency_ms_p50"])) for m in by_model] == [
        ("all", "m", 5, 10.0),
        ("all", "n", 1, 40.0),
    ]
    assert [(d["period"], d["requests"], d["prompt_tokens"]) for d in daily] == [("2026-11-27", 6, 12)]
    assert [(h["period"], h["requests"], h["latency_ms_p50"]) for h in cheap] == [
        ("2026-11-27T10", 4, None),
        ("2026-11-27T11", 2, None),
    ]


@pytest.mark.parametrize(("latencies", "median"), [([5.0, 1.0, 3.0], 3.0), ([4.0, 1.0, 3.0, 2.0], 2.5)])
async def test_latency_median_of_odd_and_even_counts(
    store: Store, latencies: list[float], median: float
) -> None:
    await insert(store, *[row(store.alice, latency=v) for v in latencies], row(store.bob, latency=0.5))
    async with store.db.read() as session:
        assert await q.latency_median(session, user_id=store.alice, since=T0, count=len(latencies)) == median
        assert await q.latency_median(session, user_id=store.alice, since=T0, count=0) is None
        later = T0 + timedelta(minutes=1)
        assert await q.latency_median(session, user_id=store.alice, since=later, count=1) is None
