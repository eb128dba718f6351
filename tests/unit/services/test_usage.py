"""The usage recorder on a real database: rows buffered and written in batches, token counts
told to the rate limiter, keys' last use written with them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.services.token_counts import TokenCounts
from inference_club.services.usage import Usage, UsageRecorder
from inference_club.store import usage as q
from inference_club.store.tables import UsageRecord
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


def usage(built: Built, request_id: str, **extra: object) -> Usage:
    values: dict[str, object] = {
        "request_id": request_id,
        "user_id": built.principal.user_id,
        "key_id": built.principal.key_id,
        "provider_id": None,
        "endpoint": "chat.completions",
        "model": "chat",
        "status_code": 200,
        "latency_ms": 12.5,
        **extra,
    }
    return Usage(**values)  # type: ignore[arg-type]


async def rows(built: Built) -> list[UsageRecord]:
    async with built.hub.database.read() as session:
        return list(await q.recent_usage(session, user_id=built.principal.user_id))


def test_token_counts_are_copied_only_when_reported(built: Built) -> None:
    row = usage(built, "r1")
    row.set_tokens(None)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)
    row.set_tokens(TokenCounts(prompt_tokens=3, completion_tokens=4, total_tokens=7))
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (3, 4, 7)
    assert row.row()["total_tokens"] == 7 and row.row()["request_id"] == "r1"
    assert set(row.row()) >= {"user_id", "key_id", "endpoint", "status_code", "latency_ms", "created_at"}


async def test_recorded_rows_are_written_on_flush(built: Built) -> None:
    recorder = built.hub.usage
    seen: list[str] = []
    recorder.on_record = lambda u: seen.append(u.request_id)
    first = usage(built, "r1", total_tokens=9)
    recorder.record(first)
    recorder.record(usage(built, "r2", status_code=502, error_type="upstream_error"))
    assert first.created_at is not None  # stamped when recorded
    assert recorder.pending == 2 and seen == ["r1", "r2"] and await rows(built) == []
    assert await recorder.flush() == 2
    assert recorder.pending == 0 and recorder.written == 2
    written = {r.request_id: r for r in await rows(built)}
    assert written["r1"].total_tokens == 9 and written["r1"].model == "chat"
    assert (written["r2"].status_code, written["r2"].error_type) == (502, "upstream_error")
    assert await recorder.flush() == 0


async def test_rows_recorded_during_a_flush_wait_for_the_next_one(built: Built) -> None:
    """Under steady load a flush that chased new rows until none were left never ended:
    one small transaction and disk sync after another instead of one batch per interval."""
    recorder = built.hub.usage
    recorder.record(usage(built, "before"))
    insert = q.insert_usage
    transactions = 0

    async def insert_while_requests_arrive(session: object, *, rows: list[dict[str, object]]) -> None:
        nonlocal transactions
        transactions += 1
        recorder.record(usage(built, f"during-{transactions}"))  # a request finished meanwhile
        await insert(session, rows=rows)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(q, "insert_usage", insert_while_requests_arrive)
        async with asyncio.timeout(5):  # the old way never returned here
            assert await recorder.flush() == 1
        assert transactions == 1 and recorder.pending == 1
        assert await recorder.flush() == 1
    assert transactions == 2 and recorder.pending == 1  # "during-2" waits for the next tick
    assert {r.request_id for r in await rows(built)} == {"before", "during-1"}


async def test_a_flush_called_while_another_writes_returns_once_that_one_is_written(built: Built) -> None:
    """The background flush may hold the buffer's rows in its transaction when someone
    flushes to read them back: that flush must not return before they are written."""
    recorder = built.hub.usage
    insert = q.insert_usage
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_insert(session: object, *, rows: list[dict[str, object]]) -> None:
        writing.set()
        await release.wait()
        await insert(session, rows=rows)  # type: ignore[arg-type]

    recorder.record(usage(built, "in-flight"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(q, "insert_usage", slow_insert)
        background = asyncio.create_task(recorder.flush())
        await writing.wait()  # its rows left the buffer, not yet written
        reader = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.05)
        assert not reader.done()  # waits for the write in flight
        release.set()
        assert await background == 1
        assert await reader == 0
    assert [r.request_id for r in await rows(built)] == ["in-flight"]


async def test_stop_also_writes_rows_recorded_during_its_flush(built: Built) -> None:
    recorder = built.hub.usage
    insert = q.insert_usage
    late = [usage(built, "late-1"), usage(built, "late-2")]

    async def insert_while_requests_finish(session: object, *, rows: list[dict[str, object]]) -> None:
        if late:
            recorder.record(late.pop(0))
        await insert(session, rows=rows)  # type: ignore[arg-type]

    recorder.record(usage(built, "first"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(q, "insert_usage", insert_while_requests_finish)
        await recorder.stop()
    assert recorder.pending == 0
    assert {r.request_id for r in await rows(built)} == {"first", "late-1", "late-2"}


async def test_tokens_are_told_to_the_limiter_per_key(built: Built) -> None:
    spent: list[tuple[str, int]] = []
    recorder = UsageRecorder(
        built.hub.database, built.hub.auth, interval_s=60, tokens_spent=lambda k, n: spent.append((k, n))
    )
    key = built.principal.key_id
    recorder.record(usage(built, "a", total_tokens=10))
    recorder.record(usage(built, "b", prompt_tokens=3, completion_tokens=4))  # no total: the sum
    recorder.record(usage(built, "c"))  # no counts: nothing spent
    anonymous = usage(built, "d", total_tokens=5)
    anonymous.key_id = None
    recorder.record(anonymous)
    assert spent == [(key, 10), (key, 7)]


async def test_the_keys_last_use_is_written_with_the_rows(built: Built) -> None:
    [(key, user)] = await built.hub.accounts.list_keys("alice")
    assert key.last_used_at is None
    await built.hub.usage.flush()  # authenticating in the fixture marked the key used
    [(key, _)] = await built.hub.accounts.list_keys("alice")
    assert key.last_used_at is not None and user.username == "alice"


async def test_stop_writes_what_is_left(built: Built) -> None:
    recorder = built.hub.usage
    recorder.start()
    recorder.record(usage(built, "late"))
    await recorder.stop()
    assert [r.request_id for r in await rows(built)] == ["late"]


async def test_stop_ends_the_loop_when_the_cancel_meets_its_wake_up(built: Built) -> None:
    """A cancel that lands as the loop's wait finishes must still end the loop.

    On Python 3.11 ``asyncio.wait_for`` returned the finished wait and dropped the cancel:
    the loop flushed, waited another interval, and ``stop()`` never returned.
    """
    recorder = built.hub.usage
    recorder.start()
    await asyncio.sleep(0)  # one turn of the loop: the recorder is now waiting for its wake-up
    recorder._wake.set()  # the wait ends on the next turn, in the same turn as stop()'s cancel
    async with asyncio.timeout(5) as bound:
        await recorder.stop()  # swallows the CancelledError, so check the bound, not an exception
    assert not bound.expired()
