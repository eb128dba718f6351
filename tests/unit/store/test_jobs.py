"""Job queries on SQLite and PostgreSQL: claims are exclusive, every transition is conditional."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.ids import new_id
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import Batch, IdempotencyKey, Job
from tests.unit.store.conftest import Store


@pytest.fixture
def db(store: Store) -> Database:
    """A migrated database (SQLite, then PostgreSQL) with users alice and bob."""
    return store.db


async def user_id(db: Database, name: str) -> str:
    from inference_club.store import accounts as accounts_q

    async with db.read() as session:
        user = await accounts_q.get_user_by_name(session, username=name)
    assert user is not None
    return user.id


def make_job(
    user: str, *, queued_at: datetime | None = None, batch_id: str | None = None, max_attempts: int = 3
) -> Job:
    now = queued_at or utcnow()
    return Job(
        id=new_id("job"),
        user_id=user,
        batch_id=batch_id,
        endpoint="embeddings",
        model="m",
        body={"model": "m", "input": "x"},
        status="QUEUED",
        attempts=0,
        max_attempts=max_attempts,
        revision=0,
        request_id="r",
        base_url="http://hub",
        files=[],
        created_at=now,
        queued_at=now,
        run_after=now,
    )


async def add(db: Database, *jobs: Job) -> list[str]:
    async with db.transaction() as session:
        await q.add_jobs(session, jobs=list(jobs))
    return [j.id for j in jobs]


def lease(seconds: float = 30) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


async def test_concurrent_claimers_never_claim_a_job_twice(db: Database) -> None:
    alice = await user_id(db, "alice")
    ids = await add(db, *[make_job(alice) for _ in range(60)])
    won: dict[str, list[str]] = {}

    async def claimer(name: str) -> None:
        while True:
            async with db.transaction() as session:
                claimed = await q.claim_next(session, owner=name, now=utcnow(), lease_until=lease(), limit=3)
            if not claimed:
                return
            for job in claimed:
                won.setdefault(job.id, []).append(name)
            await asyncio.sleep(0)

    await asyncio.gather(*[claimer(f"d{i}") for i in range(6)])
    assert sorted(won) == sorted(ids)
    assert all(len(owners) == 1 for owners in won.values())


async def test_racing_claims_of_one_job_have_one_winner(db: Database) -> None:
    alice = await user_id(db, "alice")
    [job_id] = await add(db, make_job(alice))

    async def claim(owner: str) -> list[Job]:
        async with db.transaction() as session:
            return await q.claim(session, job_ids=[job_id], owner=owner, now=utcnow(), lease_until=lease())

    results = await asyncio.gather(*[claim(f"d{i}") for i in range(5)])
    winners = [r[0] for r in results if r]
    assert len(winners) == 1
    job = winners[0]
    assert job.status == "PROCESSING" and job.attempts == 1 and job.revision == 1 and job.started_at


async def test_finish_only_by_the_current_holder(db: Database) -> None:
    alice = await user_id(db, "alice")
    [job_id] = await add(db, make_job(alice))
    async with db.transaction() as session:
        [job] = await q.claim(session, job_ids=[job_id], owner="me", now=utcnow(), lease_until=lease())
    async with db.transaction() as session:
        assert (
            await q.finish(session, job_id=job_id, owner="other", attempt=1, status="PROCESSED", now=utcnow())
            is None
        )
        assert (
            await q.finish(session, job_id=job_id, owner="me", attempt=2, status="PROCESSED", now=utcnow())
            is None
        )
        done = await q.finish(
            session,
            job_id=job_id,
            owner="me",
            attempt=1,
            status="PROCESSED",
            now=utcnow(),
            result={"ok": True},
            result_url="http://hub/f",
            files=[{"id": "file_1"}],
            provider_id="prov_1",
            provider_name="rig",
        )
    assert done is not None and done.status == "PROCESSED" and done.result == {"ok": True}
    assert done.provider_name == "rig" and done.lease_expires_at is None and done.revision == job.revision + 1
    async with db.transaction() as session:
        assert (
            await q.finish(session, job_id=job_id, owner="me", attempt=1, status="FAILED", now=utcnow())
            is None
        )
        assert await q.cancel(session, job_ids=[job_id], now=utcnow()) == []


async def test_unclaim_requeue_and_run_after(db: Database) -> None:
    alice = await user_id(db, "alice")
    [job_id] = await add(db, make_job(alice))
    async with db.transaction() as session:
        await q.claim(session, job_ids=[job_id], owner="me", now=utcnow(), lease_until=lease())
        back = await q.unclaim(session, job_id=job_id, owner="me", attempt=1)
    assert back is not None and back.status == "QUEUED" and back.attempts == 0
    async with db.transaction() as session:
        await q.claim(session, job_ids=[job_id], owner="me", now=utcnow(), lease_until=lease())
        later = utcnow() + timedelta(seconds=60)
        again = await q.requeue(
            session,
            job_id=job_id,
            owner="me",
            attempt=1,
            run_after=later,
            error={"message": "boom", "type": "upstream_error", "attempt": 1},
        )
    assert again is not None and again.status == "QUEUED" and again.attempts == 1
    async with db.read() as session:
        assert await q.claimable(session, now=utcnow(), per_user=10, limit=10) == []
        due = await q.claimable(session, now=later + timedelta(seconds=1), per_user=10, limit=10)
    assert [r.id for r in due] == [job_id]
    async with db.transaction() as session:
        assert await q.claim(session, job_ids=[job_id], owner="me", now=utcnow(), lease_until=lease()) == []


async def test_reaper_requeues_expired_leases_and_fails_used_up_jobs(db: Database) -> None:
    alice = await user_id(db, "alice")
    fresh, used_up, alive = make_job(alice), make_job(alice, max_attempts=1), make_job(alice)
    await add(db, fresh, used_up, alive)
    now = utcnow()
    async with db.transaction() as session:
        await q.claim(
            session,
            job_ids=[fresh.id, used_up.id],
            owner="dead",
            now=now,
            lease_until=now - timedelta(seconds=1),
        )
        await q.claim(
            session, job_ids=[alive.id], owner="alive", now=now, lease_until=now + timedelta(seconds=30)
        )
    async with db.transaction() as session:
        reaped = {j.id: j for j in await q.reap(session, now=utcnow())}
    assert set(reaped) == {fresh.id, used_up.id}
    assert reaped[fresh.id].status == "QUEUED" and reaped[fresh.id].attempts == 1
    error = reaped[fresh.id].error
    assert error is not None
    assert error == {
        "message": error["message"],
        "type": "lease_expired",
        "attempt": 1,
    }
    assert reaped[used_up.id].status == "FAILED" and reaped[used_up.id].finished_at is not None
    # The dead owner's late answer is dropped; the live one renews and is not lost.
    async with db.transaction() as session:
        assert (
            await q.finish(
                session, job_id=fresh.id, owner="dead", attempt=1, status="PROCESSED", now=utcnow()
            )
            is None
        )
        await q.renew(
            session, job_ids=[alive.id], owner="alive", lease_until=utcnow() + timedelta(seconds=90)
        )
    async with db.read() as session:
        assert await q.lost(session, job_ids=[alive.id, fresh.id], owner="alive") == [fresh.id]
        row = await q.get_job(session, job_id=alive.id, user_id=None)
    assert row is not None and row.lease_expires_at is not None
    assert as_utc(row.lease_expires_at) > utcnow() + timedelta(seconds=60)


async def test_claimable_ranks_each_users_jobs(db: Database) -> None:
    alice, bob = await user_id(db, "alice"), await user_id(db, "bob")
    base = utcnow() - timedelta(minutes=5)
    a = [make_job(alice, queued_at=base + timedelta(seconds=i)) for i in range(4)]
    b = [make_job(bob, queued_at=base + timedelta(seconds=10 + i)) for i in range(2)]
    await add(db, *a, *b)
    async with db.read() as session:
        refs = await q.claimable(session, now=utcnow(), per_user=3, limit=10)
    assert [(r.user_id, r.rank) for r in refs] == [(alice, 1), (bob, 1), (alice, 2), (bob, 2), (alice, 3)]
    assert refs[0].id == a[0].id and refs[0].endpoint == "embeddings" and refs[0].model == "m"
    assert refs[0].queued_at is not None and abs((as_utc(refs[0].queued_at) - base).total_seconds()) < 1


async def test_cancel_retry_and_listing(db: Database) -> None:
    alice, bob = await user_id(db, "alice"), await user_id(db, "bob")
    batch = Batch(id=new_id("batch"), user_id=alice, label="b", total=3, created_at=utcnow())
    jobs = [make_job(alice, batch_id=batch.id) for _ in range(3)]
    async with db.transaction() as session:
        await q.add_batch(session, batch=batch)
        await q.add_jobs(session, jobs=jobs)
        await q.add_jobs(session, jobs=[make_job(bob)])
    async with db.transaction() as session:
        await q.claim(session, job_ids=[jobs[0].id], owner="me", now=utcnow(), lease_until=lease())
        canceled = await q.cancel(session, job_ids=[jobs[0].id, jobs[1].id], now=utcnow())
    assert {j.status for j in canceled} == {"CANCELED"} and len(canceled) == 2
    async with db.transaction() as session:
        assert await q.retry(session, job_id=jobs[2].id, now=utcnow()) is None  # QUEUED
        retried = await q.retry(session, job_id=jobs[0].id, now=utcnow())
    assert retried is not None and retried.status == "QUEUED" and retried.attempts == 0
    async with db.read() as session:
        counts = await q.batch_counts(session, batch_ids=[batch.id])
        assert counts == {batch.id: {"QUEUED": 2, "CANCELED": 1}}
        assert await q.status_counts(session, user_id=alice) == {"QUEUED": 2, "CANCELED": 1}
        assert await q.status_counts(session, user_id=None) == {"QUEUED": 3, "CANCELED": 1}
        assert sorted(await q.active_ids(session, batch_id=batch.id)) == sorted([jobs[0].id, jobs[2].id])
        page = await q.list_jobs(session, user_id=alice, limit=2)
        rest = await q.list_jobs(session, user_id=alice, limit=2, after=page[-1].id)
        assert [j.id for j in [*page, *rest]] == sorted((j.id for j in jobs), reverse=True)
        assert [j.id for j in await q.list_jobs(session, user_id=alice, statuses=["CANCELED"], limit=9)] == [
            jobs[1].id
        ]
        assert await q.get_job(session, job_id=jobs[0].id, user_id=bob) is None
        assert await q.get_batch(session, batch_id=batch.id, user_id=bob) is None
        assert await q.oldest_queued_at(session, user_id=alice) is not None
        assert (await q.revisions(session, job_ids=[jobs[1].id]))[jobs[1].id] == ("CANCELED", 1)


async def test_idempotency_keys(db: Database) -> None:
    alice = await user_id(db, "alice")
    old = utcnow() - timedelta(days=2)

    def record(key: str, at: datetime) -> IdempotencyKey:
        return IdempotencyKey(
            user_id=alice, key=key, kind="job", fingerprint="f", object_id="job_1", created_at=at
        )

    async with db.transaction() as session:
        await q.add_idempotency(session, record=record("old", old))
        await q.add_idempotency(session, record=record("new", utcnow()))
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await q.add_idempotency(session, record=record("new", utcnow()))
    async with db.transaction() as session:
        assert await q.purge_idempotency(session, before=utcnow() - timedelta(days=1)) == 1
    async with db.read() as session:
        assert await q.get_idempotency(session, user_id=alice, key="old") is None
        kept = await q.get_idempotency(session, user_id=alice, key="new")
    assert kept is not None and kept.object_id == "job_1"


async def test_progress_and_failing_a_queued_job_are_conditional(db: Database) -> None:
    alice, bob = await user_id(db, "alice"), await user_id(db, "bob")
    running, waiting = make_job(alice), make_job(alice)
    await add(db, running, waiting)
    async with db.transaction() as session:
        await q.claim(session, job_ids=[running.id], owner="me", now=utcnow(), lease_until=lease())
    step = {"value": 0.5, "stage": "denoise"}
    async with db.transaction() as session:
        assert await q.set_progress(session, job_id=running.id, attempt=1, user_id=bob, progress=step) is None
        assert (
            await q.set_progress(session, job_id=running.id, attempt=2, user_id=alice, progress=step) is None
        )
        assert (
            await q.set_progress(session, job_id=waiting.id, attempt=0, user_id=alice, progress=step) is None
        )
        moved = await q.set_progress(session, job_id=running.id, attempt=1, user_id=alice, progress=step)
        assert moved is not None and moved.progress == step and moved.revision == 2
        error = {"message": "no provider", "type": "no_provider"}
        assert await q.fail_queued(session, job_id=running.id, now=utcnow(), error=error) is None
        failed = await q.fail_queued(session, job_id=waiting.id, now=utcnow(), error=error)
    assert failed is not None and failed.status == "FAILED" and failed.error == error
    assert failed.finished_at is not None
    async with db.read() as session:
        assert await q.count_in(session, statuses=["PROCESSING", "FAILED", "QUEUED"], limit=10) == {
            "PROCESSING": 1,
            "FAILED": 1,
        }
        assert sum((await q.count_in(session, statuses=["PROCESSING", "FAILED"], limit=1)).values()) == 1
        assert await q.oldest_queued_at(session, user_id=alice) is None  # nothing queued any more
        assert await q.revisions(session, job_ids=[]) == {}


async def test_batches_page_per_owner_and_list_their_jobs(db: Database) -> None:
    alice, bob = await user_id(db, "alice"), await user_id(db, "bob")
    batches = [
        Batch(id=new_id("batch"), user_id=alice, label=None, total=1, created_at=utcnow()) for _ in range(3)
    ]
    theirs = Batch(id=new_id("batch"), user_id=bob, label=None, total=0, created_at=utcnow())
    jobs = [make_job(alice, batch_id=batches[0].id) for _ in range(2)]
    async with db.transaction() as session:
        for batch in [*batches, theirs]:
            await q.add_batch(session, batch=batch)
        await q.add_jobs(session, jobs=jobs)
    async with db.read() as session:
        page = await q.list_batches(session, user_id=alice, limit=2)
        rest = await q.list_batches(session, user_id=alice, limit=2, after=page[-1].id)
        assert [b.id for b in [*page, *rest]] == sorted((b.id for b in batches), reverse=True)
        assert [b.id for b in await q.list_batches(session, user_id=bob, limit=9)] == [theirs.id]
        found = await q.get_batch(session, batch_id=batches[0].id, user_id=alice)
        assert found is not None and found.total == 1
        assert [j.id for j in await q.batch_jobs(session, batch_id=batches[0].id)] == sorted(
            j.id for j in jobs
        )
        assert await q.batch_counts(session, batch_ids=[]) == {}
        assert await q.batch_counts(session, batch_ids=[batches[1].id]) == {batches[1].id: {}}


async def test_idempotency_keys_are_per_user_and_can_be_deleted(db: Database) -> None:
    alice, bob = await user_id(db, "alice"), await user_id(db, "bob")

    def record(user: str) -> IdempotencyKey:
        return IdempotencyKey(
            user_id=user, key="k", kind="job", fingerprint=user, object_id="job_1", created_at=utcnow()
        )

    async with db.transaction() as session:
        await q.add_idempotency(session, record=record(alice))
        await q.add_idempotency(session, record=record(bob))  # the same key, another user
    async with db.transaction() as session:
        await q.delete_idempotency(session, user_id=alice, key="k")
    async with db.read() as session:
        assert await q.get_idempotency(session, user_id=alice, key="k") is None
        theirs = await q.get_idempotency(session, user_id=bob, key="k")
    assert theirs is not None and theirs.fingerprint == bob


def test_lease_until_adds_the_lease() -> None:
    now = utcnow()
    assert q.lease_until(now, 12.5) == now + timedelta(seconds=12.5)
