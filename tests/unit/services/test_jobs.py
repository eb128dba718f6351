"""The job service on a real database: submit, Idempotency-Key, read and wait, cancel, retry,
lists, the queue summary and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from inference_club.domain.clock import utcnow
from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.jobs import IDEMPOTENCY_TTL_S
from inference_club.errors import Conflict, InvalidRequest, NotFound
from inference_club.services.jobs import check_idempotency_key
from inference_club.store.tables import IdempotencyKey, Job
from tests.unit.services.built_hub import Built, built_hub

EMBEDDINGS = BY_NAME["embeddings"]


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path, job_max_attempts=3) as built:
        yield built


async def submit(built: Built, text: str = "x", key: str | None = None, **kw: Any) -> tuple[Job, bool]:
    return await built.hub.jobs.submit(
        built.principal,
        EMBEDDINGS,
        "emb",
        {"model": "emb", "input": text, "async": True},
        base_url="http://hub",
        request_id="req_1",
        idempotency_key=key,
        **kw,
    )


async def test_a_submitted_job_is_a_queued_row_without_the_async_flag(built: Built) -> None:
    job, replayed = await submit(built)
    assert not replayed
    stored = await built.job(job.id)
    assert stored.status == "QUEUED" and stored.attempts == 0 and stored.max_attempts == 3
    assert stored.body == {"model": "emb", "input": "x"}
    assert stored.user_id == built.principal.user_id and stored.key_id == built.principal.key_id


@pytest.mark.parametrize("key", ["", "   ", "x" * 256, "tab\there", "new\nline"])
def test_a_malformed_idempotency_key_is_a_400(key: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_idempotency_key(key)
    assert caught.value.param == "Idempotency-Key"


def test_an_idempotency_key_is_trimmed() -> None:
    assert check_idempotency_key("  k-1  ") == "k-1"
    assert check_idempotency_key(None) is None


async def test_the_same_key_and_body_answer_the_same_job_without_checking_again(built: Built) -> None:
    first, replayed = await submit(built, key="k")
    assert not replayed
    checks: list[int] = []
    again, replayed = await submit(built, key="k", check=lambda: checks.append(1))
    assert replayed and again.id == first.id and checks == []
    assert len(await built.hub.jobs.list_jobs(built.principal.user_id, limit=10)) == 1
    # A different key is a different job, and its check runs.
    other, replayed = await submit(built, key="k2", check=lambda: checks.append(1))
    assert not replayed and other.id != first.id and checks == [1]


async def test_the_same_key_with_another_body_is_a_409(built: Built) -> None:
    await submit(built, text="one", key="k")
    with pytest.raises(Conflict) as caught:
        await submit(built, text="two", key="k")
    assert caught.value.param == "Idempotency-Key"


async def test_an_expired_key_names_a_new_job(built: Built) -> None:
    first, _ = await submit(built, key="k")
    old = utcnow() - timedelta(seconds=IDEMPOTENCY_TTL_S + 60)
    async with built.hub.database.transaction() as session:
        await session.execute(update(IdempotencyKey).values(created_at=old))
    # Expired: not a replay, and even another body may use the key now.
    second, replayed = await submit(built, text="other", key="k")
    assert not replayed and second.id != first.id
    third, replayed = await submit(built, text="other", key="k")
    assert replayed and third.id == second.id


async def test_a_check_that_raises_queues_nothing(built: Built) -> None:
    def refuse() -> None:
        raise InvalidRequest("no")

    with pytest.raises(InvalidRequest):
        await submit(built, check=refuse)
    assert await built.hub.jobs.list_jobs(built.principal.user_id, limit=10) == []


async def test_another_users_job_is_not_found(built: Built) -> None:
    job, _ = await submit(built)
    bob = await built.user("bob")
    for call in (
        built.hub.jobs.get(bob.user_id, job.id),
        built.hub.jobs.cancel(bob.user_id, job.id),
        built.hub.jobs.retry(bob.user_id, job.id),
    ):
        with pytest.raises(NotFound):
            await call
    assert (await built.job(job.id)).status == "QUEUED"


async def test_get_with_wait_returns_when_the_job_ends(built: Built) -> None:
    job, _ = await submit(built)
    user = built.principal.user_id
    assert (await built.hub.jobs.get(user, job.id, wait_s=0.05)).status == "QUEUED"
    waiting = asyncio.create_task(built.hub.jobs.get(user, job.id, wait_s=30))
    await asyncio.sleep(0)
    await built.finish(job.id, result={"data": []})
    async with asyncio.timeout(10):
        done = await waiting
    assert done.status == "PROCESSED" and done.result == {"data": []}


async def test_cancel_only_an_active_job(built: Built) -> None:
    user = built.principal.user_id
    queued, _ = await submit(built, text="a")
    canceled = await built.hub.jobs.cancel(user, queued.id)
    assert canceled.status == "CANCELED" and canceled.finished_at is not None
    with pytest.raises(Conflict):
        await built.hub.jobs.cancel(user, queued.id)
    running, _ = await submit(built, text="b")
    await built.claim(running.id)
    assert (await built.hub.jobs.cancel(user, running.id)).status == "CANCELED"
    finished, _ = await submit(built, text="c")
    await built.finish(finished.id)
    with pytest.raises(Conflict):
        await built.hub.jobs.cancel(user, finished.id)
    assert (await built.job(finished.id)).status == "PROCESSED"


async def test_cancel_many_changes_only_active_jobs(built: Built) -> None:
    a, _ = await submit(built, text="a")
    b, _ = await submit(built, text="b")
    await built.finish(b.id)
    changed = await built.hub.jobs.cancel_many([a.id, b.id])
    assert [j.id for j in changed] == [a.id]
    assert (await built.job(b.id)).status == "PROCESSED"


async def test_retry_requeues_a_failed_or_canceled_job_with_fresh_attempts(built: Built) -> None:
    user = built.principal.user_id
    job, _ = await submit(built)
    with pytest.raises(Conflict):
        await built.hub.jobs.retry(user, job.id)  # still queued
    await built.finish(job.id, status="FAILED", error={"message": "boom", "type": "upstream_error"})
    retried = await built.hub.jobs.retry(user, job.id)
    assert retried.status == "QUEUED" and retried.attempts == 0 and retried.error is None
    await built.hub.jobs.cancel(user, job.id)
    assert (await built.hub.jobs.retry(user, job.id)).status == "QUEUED"


async def test_list_filters_by_status_and_active(built: Built) -> None:
    user = built.principal.user_id
    queued, _ = await submit(built, text="a")
    done, _ = await submit(built, text="b")
    await built.finish(done.id)
    jobs = built.hub.jobs
    assert {j.id for j in await jobs.list_jobs(user, limit=10)} == {queued.id, done.id}
    assert [j.id for j in await jobs.list_jobs(user, statuses=["PROCESSED"], limit=10)] == [done.id]
    assert [j.id for j in await jobs.list_jobs(user, active=True, limit=10)] == [queued.id]
    assert await jobs.list_jobs(user, statuses=["PROCESSED"], active=True, limit=10) == []
    with pytest.raises(InvalidRequest) as caught:
        await jobs.list_jobs(user, statuses=["DONE"], limit=10)
    assert caught.value.param == "status"


async def test_summary_counts_by_status_per_user_and_hub(built: Built) -> None:
    await submit(built, text="a")
    done, _ = await submit(built, text="b")
    await built.finish(done.id)
    summary = await built.hub.jobs.summary(built.principal.user_id)
    assert summary["scope"] == "user" and summary["active"] == 1
    assert summary["counts"]["QUEUED"] == 1 and summary["counts"]["PROCESSED"] == 1
    assert summary["counts"]["FAILED"] == 0 and summary["oldest_queued_age_s"] >= 0
    bob = await built.user("bob")
    empty = await built.hub.jobs.summary(bob.user_id)
    assert empty["active"] == 0 and empty["oldest_queued_age_s"] is None
    assert (await built.hub.jobs.summary(None))["scope"] == "hub"


async def test_events_follow_the_job_to_its_end(built: Built) -> None:
    job, _ = await submit(built)
    stream = built.hub.jobs.events(built.principal.user_id, job.id)
    first = await anext(stream)
    assert first is not None and first["status"] == "QUEUED"
    nxt = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await built.finish(job.id, result={"ok": True})
    seen = []
    async with asyncio.timeout(10):
        event = await nxt
    while event is not None:
        seen.append(event["status"])
        if event["status"] == "PROCESSED":
            break
        async with asyncio.timeout(10):
            event = await anext(stream)
    assert seen[-1] == "PROCESSED"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_events_of_an_ended_job_are_its_one_state(built: Built) -> None:
    job, _ = await submit(built)
    await built.hub.jobs.cancel(built.principal.user_id, job.id)
    events = [e async for e in built.hub.jobs.events(built.principal.user_id, job.id)]
    assert [e["status"] for e in events if e is not None] == ["CANCELED"]
    with pytest.raises(NotFound):
        await anext(built.hub.jobs.events("usr_nobody", job.id))
