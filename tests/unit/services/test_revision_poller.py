"""Job changes made by another process reach every watcher here through one shared poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from inference_club.services.accounts import Accounts
from inference_club.services.job_events import JobSignals
from inference_club.services.jobs import RevisionPoller
from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from inference_club.store.tables import Job
from tests.conftest import make_settings
from tests.unit.store.test_jobs import add, make_job, user_id


@pytest.fixture
async def db(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    database = Database(make_settings(tmp_path / "data", database_url))
    await migrate(database)
    await Accounts(database).create_user("alice")
    try:
        yield database
    finally:
        await database.dispose()


async def _bump(database: Database, job_id: str, *, revision: int, status: str) -> None:
    # Written straight to the database, as another hub process would: no signal here.
    async with database.transaction() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(revision=revision, status=status))


async def test_one_poll_delivers_a_change_to_every_watcher_of_the_job(db: Database) -> None:
    alice = await user_id(db, "alice")
    watched, other = await add(db, make_job(alice), make_job(alice))
    signals = JobSignals()
    poller = RevisionPoller(db, signals, interval_s=0.05)
    try:
        with signals.subscribe(watched) as first, signals.subscribe(watched) as second:
            poller.watch(watched, 0)
            poller.watch(watched, 0)
            await _bump(db, other, revision=5, status="PROCESSING")  # nobody watches it
            await _bump(db, watched, revision=1, status="PROCESSING")
            async with asyncio.timeout(10):
                events = [await q.get() for q in (first, second)]
            assert [(e.job_id, e.revision, e.status) for e in events] == [(watched, 1, "PROCESSING")] * 2
            assert events[0].payload["status"] == "PROCESSING"
            await poller.poll()  # nothing new: nothing delivered again
            assert first.empty() and second.empty()
            assert repr(poller) == "<RevisionPoller watched=1>"
        # Once nobody watches, the poller forgets the job and its task ends.
        await _bump(db, watched, revision=2, status="PROCESSED")
        await asyncio.sleep(0.2)
        assert repr(poller) == "<RevisionPoller watched=0>"
    finally:
        await poller.stop()


async def test_a_stalled_watcher_still_gets_the_newest_state() -> None:
    signals = JobSignals()
    job = make_job("u")
    with signals.subscribe(job.id) as events:
        for revision in range(1, 300):
            job.revision = revision
            job.status = "PROCESSED" if revision == 299 else "PROCESSING"
            signals.deliver(job)
        drained = []
        while not events.empty():
            drained.append(events.get_nowait())
    assert drained[-1].revision == 299 and drained[-1].status == "PROCESSED"
    assert [e.revision for e in drained] == sorted(e.revision for e in drained)
