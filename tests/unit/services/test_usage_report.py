"""Usage reports by day and by hour, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inference_club.services.usage_report import UsageReports
from inference_club.store import usage as q
from inference_club.store.db import Database

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)


def _row(
    user: str, at: datetime, model: str, status: int, latency: float, tokens: int | None
) -> dict[str, object]:
    return {
        "request_id": "req",
        "user_id": user,
        "key_id": None,
        "provider_id": None,
        "endpoint": "chat.completions",
        "model": model,
        "status_code": status,
        "error_type": None,
        "latency_ms": latency,
        "ttft_ms": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": tokens,
        "created_at": at,
    }


async def test_usage_by_day_and_by_hour(database: Database) -> None:
    rows = [
        _row("usr_a", NOW - timedelta(minutes=5), "m1", 200, 10.0, 5),
        _row("usr_a", NOW - timedelta(minutes=10), "m1", 200, 30.0, 7),
        _row("usr_a", NOW - timedelta(minutes=20), "m1", 502, 20.0, None),
        _row("usr_a", NOW - timedelta(hours=2), "m2", 200, 100.0, 1),
        _row("usr_a", NOW - timedelta(days=1, hours=1), "m1", 200, 50.0, 2),
        _row("usr_a", NOW - timedelta(days=30), "m1", 200, 50.0, 2),  # outside both windows
        _row("usr_b", NOW - timedelta(minutes=5), "m1", 200, 10.0, 100),  # someone else's
    ]
    async with database.transaction() as session:
        await q.insert_usage(session, rows=rows)
    reports = UsageReports(database)

    by_day = await reports.by_day("usr_a", days=7, now=NOW)
    assert [
        (r["day"], r["model"], r["requests"], r["errors"], r["total_tokens"], r["latency_ms_p50"])
        for r in by_day["data"]
    ] == [
        ("2026-11-26", "m1", 1, 0, 2, 50.0),
        ("2026-11-27", "m1", 3, 1, 12, 20.0),
        ("2026-11-27", "m2", 1, 0, 1, 100.0),
    ]
    assert by_day["total"]["requests"] == 5 and by_day["since"] == "2026-11-21"

    window = await reports.by_hour("usr_a", hours=24, now=NOW)
    hours = window["hours"]
    assert window["total"]["requests"] == 4 and window["total"]["latency_ms_p50"] == 25.0
    assert len(hours) == 24 and hours[-1]["hour"].startswith("2026-11-27T15:00")
    assert (hours[-1]["requests"], hours[-1]["errors"], hours[-1]["total_tokens"]) == (3, 1, 12)
    assert hours[-3]["requests"] == 1 and sum(h["requests"] for h in hours) == 4
