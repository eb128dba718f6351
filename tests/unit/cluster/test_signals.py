"""Job and run changes fanned out between replicas over a real Redis.

The receiving replica's job service and signals come from a hub built by ``build_hub`` (once
per module, never started: no dispatcher loop), its database is each test's migrated SQLite
file; the other replica is a bare broadcast on the same Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inference_club.cluster.broadcast import Broadcast
from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.signals import JOBS_CHANNEL, RUNS_CHANNEL, SignalFanout
from inference_club.domain.jobs import JobStatus
from inference_club.services.accounts import Accounts
from inference_club.services.container import Hub, build_hub
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import Job
from tests.conftest import make_settings

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Replicas:
    hub: Hub
    database: Database
    fanout: SignalFanout
    here: Broadcast  # the receiving replica's
    other: Broadcast  # another replica's
    heard: list[dict[str, Any]]  # what the other replica received
    user_id: str

    async def add_job(self, job_id: str, *, status: str = JobStatus.PROCESSING, revision: int = 5) -> None:
        job = Job(
            id=job_id,
            user_id=self.user_id,
            endpoint="audio.speech",
            model="tts",
            body={"model": "tts", "input": "hi"},
            status=status,
            attempts=1,
            max_attempts=3,
            revision=revision,
            request_id="req",
            base_url="http://hub",
            created_at=T0,
            queued_at=T0,
            run_after=T0,
        )
        async with self.database.transaction() as session:
            await q.add_jobs(session, jobs=[job])

    async def read_job(self, job_id: str) -> Job:
        async with self.database.read() as session:
            job = await q.get_job(session, job_id=job_id, user_id=None)
        assert job is not None
        return job

    def tell(self, channel: str, message: dict[str, Any]) -> None:
        self.other.publish(channel, message)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Building a hub takes longer than a test: one for the module (its signals are in memory)."""
    hub = build_hub(make_settings(tmp_path_factory.mktemp("hub")))
    yield hub
    asyncio.run(hub.http.aclose())


@asynccontextmanager
async def replicas(
    hub: Hub, data_dir: Path, redis_url: str, *, start: bool = True
) -> AsyncIterator[Replicas]:
    database = Database(make_settings(data_dir))
    user = await Accounts(database).create_user("alice")
    links = [RedisLink(redis_url), RedisLink(redis_url)]
    here, other = Broadcast(links[0]), Broadcast(links[1])
    fanout = SignalFanout(here, database, hub.jobs, hub.jobs.signals, hub.workflows.signals)
    heard: list[dict[str, Any]] = []
    for channel in (JOBS_CHANNEL, RUNS_CHANNEL):
        other.on(channel, heard.append)
    try:
        for broadcast in (other, here) if start else (other,):
            await broadcast.start()
            async with asyncio.timeout(10):
                await broadcast.connected.wait()
        yield Replicas(hub, database, fanout, here, other, heard, user.id)
    finally:
        await fanout.stop()
        for broadcast in (here, other):
            await broadcast.stop()
        for link in links:
            await link.aclose()
        await database.dispose()


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"not within 10 s: {what}"
        await asyncio.sleep(0.02)


async def test_a_watched_job_is_read_from_the_database_and_handed_to_its_waiters(
    hub: Hub, data_dir: Path, redis_url: str
) -> None:
    async with replicas(hub, data_dir, redis_url) as rs:
        await rs.add_job("job_1", status=JobStatus.PROCESSED, revision=7)
        with rs.hub.jobs.signals.subscribe("job_1") as waiter:
            # Only the id is trusted: the state comes from the database.
            rs.tell(JOBS_CHANNEL, {"job": "job_1", "revision": 999, "status": "NONSENSE"})
            async with asyncio.timeout(10):
                event = await waiter.get()
        assert (event.job_id, event.revision, event.status) == ("job_1", 7, JobStatus.PROCESSED)
        assert event.payload["id"] == "job_1"


async def test_a_queued_job_wakes_the_dispatcher_and_others_do_not(
    hub: Hub, data_dir: Path, redis_url: str
) -> None:
    async with replicas(hub, data_dir, redis_url) as rs:
        wakeup = rs.hub.dispatcher._wakeup
        rs.tell(JOBS_CHANNEL, {"job": "job_1", "revision": 1, "status": JobStatus.PROCESSING})
        rs.tell(JOBS_CHANNEL, {"job": "job_2", "revision": 1, "status": JobStatus.QUEUED})
        await until(lambda: rs.here.received == 2, "both messages received")
        assert wakeup.is_set()
        wakeup.clear()
        rs.tell(JOBS_CHANNEL, {"job": "job_3", "revision": 2, "status": JobStatus.PROCESSING})
        rs.tell(JOBS_CHANNEL, {"job": 5, "status": JobStatus.QUEUED})  # no id: ignored
        await until(lambda: rs.here.received == 4, "the other two received")
        assert not wakeup.is_set()


async def test_a_run_change_wakes_that_runs_watchers_only(hub: Hub, data_dir: Path, redis_url: str) -> None:
    async with replicas(hub, data_dir, redis_url) as rs:
        runs = rs.hub.workflows.signals
        with runs.watch("run_1") as mine, runs.watch("run_2") as theirs:
            rs.tell(RUNS_CHANNEL, {"run": "run_1"})
            rs.tell(RUNS_CHANNEL, {"run": ["run_2"]})  # not an id: ignored
            async with asyncio.timeout(10):
                await mine.wait()
            await until(lambda: rs.here.received == 2, "both messages received")
            assert not theirs.is_set()


async def test_local_changes_are_told_to_the_other_replicas(hub: Hub, data_dir: Path, redis_url: str) -> None:
    async with replicas(hub, data_dir, redis_url) as rs:
        await rs.add_job("job_1", status=JobStatus.QUEUED, revision=2)
        rs.hub.jobs.signals.publish(await rs.read_job("job_1"))
        rs.hub.workflows.signals.publish("run_9")
        await until(lambda: len(rs.heard) == 2, "two notifications heard")
        bodies = [{k: v for k, v in body.items() if k != "origin"} for body in rs.heard]
        assert bodies == [{"job": "job_1", "revision": 2, "status": JobStatus.QUEUED}, {"run": "run_9"}]


async def test_after_subscribing_every_watched_job_and_run_is_read_again(
    hub: Hub, data_dir: Path, redis_url: str
) -> None:
    async with replicas(hub, data_dir, redis_url, start=False) as rs:
        await rs.add_job("job_1", revision=3)
        with (
            rs.hub.jobs.signals.subscribe("job_1") as waiter,
            rs.hub.workflows.signals.watch("run_1") as run_woken,
        ):
            await rs.here.start()  # changes made meanwhile were not heard
            async with asyncio.timeout(10):
                event = await waiter.get()
            assert event.revision == 3
            assert run_woken.is_set()


async def test_a_burst_of_news_about_one_job_ends_with_its_latest_state(
    hub: Hub, data_dir: Path, redis_url: str
) -> None:
    async with replicas(hub, data_dir, redis_url) as rs:
        await rs.add_job("job_1", revision=1)
        with rs.hub.jobs.signals.subscribe("job_1") as waiter:
            for revision in range(2, 12):
                async with rs.database.transaction() as session:
                    job = await q.get_job(session, job_id="job_1", user_id=None)
                    assert job is not None
                    job.revision = revision
                rs.tell(JOBS_CHANNEL, {"job": "job_1", "revision": revision, "status": JobStatus.PROCESSING})
            seen: list[int] = []
            while not seen or seen[-1] != 11:
                async with asyncio.timeout(10):
                    seen.append((await waiter.get()).revision)
        assert seen == sorted(seen)  # never an older state after a newer one
        assert len(seen) <= 10
