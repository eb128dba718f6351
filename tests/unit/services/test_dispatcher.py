"""The dispatcher alone, in burst mode, over a scripted transport: capacity, retries,
hand-backs, leases, cancellation from elsewhere, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from inference_club.domain.clock import utcnow
from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.providers import HeartbeatBody, ModelDecl, ProviderState, ServiceDecl
from inference_club.services.auth import Principal
from inference_club.services.capacity import Capacity
from inference_club.services.container import Hub, build_hub
from inference_club.services.transports.base import UpstreamRequest
from inference_club.store import jobs as q
from inference_club.store.migrate import migrate
from inference_club.store.tables import Job
from tests.conftest import make_settings

EMBEDDINGS = BY_NAME["embeddings"]


class ScriptedResponse:
    headers = [("content-type", "application/json")]
    agent_error = False

    def __init__(self, transport: ScriptedTransport, status: int) -> None:
        self.transport, self.status = transport, status
        self.completed = False
        self.closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.transport.delay)
        if self.status >= 400:
            yield b'{"error": {"message": "scripted failure"}}'
        else:
            yield b'{"object": "list", "data": [{"embedding": [0.5]}]}'
        self.completed = True

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.in_flight -= 1
        if not self.completed:
            self.transport.aborted += 1


class ScriptedTransport:
    """Answers each request with the next scripted status (200 when the script is empty)."""

    name = "direct"

    def __init__(self) -> None:
        self.script: list[int] = []
        self.delay = 0.0
        self.sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.aborted = 0

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> ScriptedResponse:
        self.sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return ScriptedResponse(self, self.script.pop(0) if self.script else 200)

    async def aclose(self) -> None:
        return None


@dataclass
class Parts:
    hub: Hub
    transport: ScriptedTransport
    principal: Principal

    async def submit(self, count: int = 1) -> list[str]:
        ids = []
        for i in range(count):
            job, _ = await self.hub.jobs.submit(
                self.principal,
                EMBEDDINGS,
                "m",
                {"model": "m", "input": str(i)},
                base_url="http://hub",
                request_id="req",
            )
            ids.append(job.id)
        return ids

    async def job(self, job_id: str) -> Job:
        async with self.hub.database.read() as session:
            job = await q.get_job(session, job_id=job_id, user_id=None)
        assert job is not None
        return job


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    settings = make_settings(
        tmp_path / "data",
        job_retry_base_s=0.0,
        job_retry_max_s=0.0,
        job_lease_s=1.5,
        job_poll_interval_s=0.1,
        job_drain_timeout_s=0.1,
    )
    hub = build_hub(settings)
    await migrate(hub.database)
    transport = ScriptedTransport()
    hub.transports.by_name["direct"] = transport
    await hub.accounts.create_user("alice")
    principal = await hub.auth.authenticate(f"Bearer {(await hub.accounts.create_key('alice')).raw}")
    await hub.registry.heartbeat(
        principal,
        HeartbeatBody(
            name="rig",
            callback_url="http://127.0.0.1:9",
            services=[ServiceDecl(type="embedding", max_concurrency=2, models=[ModelDecl(id="m")])],
        ),
    )
    try:
        yield Parts(hub, transport, principal)
    finally:
        await hub.stop()


async def test_burst_runs_every_job_within_capacity(parts: Parts) -> None:
    parts.transport.delay = 0.02
    ids = await parts.submit(10)
    assert await parts.hub.dispatcher.run_burst(timeout_s=10) == 10
    assert parts.transport.max_in_flight == 2 and parts.transport.sent == 10
    for job_id in ids:
        job = await parts.job(job_id)
        assert job.status == "PROCESSED" and job.attempts == 1 and job.provider_name == "rig"
        assert job.result == {"object": "list", "data": [{"embedding": [0.5]}]}
    assert "processed=10" in repr(parts.hub.dispatcher)
    assert await parts.hub.dispatcher.run_burst() == 0


async def test_transient_failures_are_retried_and_4xx_fails_at_once(parts: Parts) -> None:
    parts.transport.script = [500, 503, 200]
    [flaky] = await parts.submit()
    await parts.hub.dispatcher.run_burst(timeout_s=10)
    job = await parts.job(flaky)
    assert job.status == "PROCESSED" and job.attempts == 3 and job.error is None
    parts.transport.script = [422]
    [rejected] = await parts.submit()
    await parts.hub.dispatcher.run_burst(timeout_s=10)
    job = await parts.job(rejected)
    assert job.status == "FAILED" and job.attempts == 1
    assert job.error is not None and job.error["attempt"] == 1 and job.error["status"] == 422
    parts.transport.script = [500, 500, 500]
    [doomed] = await parts.submit()
    await parts.hub.dispatcher.run_burst(timeout_s=10)
    job = await parts.job(doomed)
    assert job.status == "FAILED" and job.attempts == 3 and job.error is not None
    assert job.error["type"] == "upstream_error" and job.error["attempt"] == 3


async def test_jobs_wait_for_a_free_slot_and_give_back_a_lost_race(parts: Parts) -> None:
    capacity = parts.hub.capacity
    assert isinstance(capacity, Capacity)  # the embedded hub's in-process slots
    key = parts.hub.registry.all()[0].services[0].index
    slot = (parts.hub.registry.all()[0].id, key)
    assert capacity.try_acquire([slot]) == slot and capacity.try_acquire([slot]) == slot
    [job_id] = await parts.submit()
    dispatcher = parts.hub.dispatcher
    assert await dispatcher.tick() == 0
    assert (await parts.job(job_id)).status == "QUEUED"

    # Claimed while a synchronous request takes the last slot: handed back, not counted.
    dispatcher._has_free_slot = lambda found: True  # type: ignore[method-assign]
    assert await dispatcher.tick() == 1
    await asyncio.gather(*[r.task for r in dispatcher._running.values()])
    job = await parts.job(job_id)
    assert job.status == "QUEUED" and job.attempts == 0 and dispatcher.stats.handed_back == 1
    del dispatcher._has_free_slot

    capacity.release(slot)
    capacity.release(slot)
    assert await dispatcher.run_burst(timeout_s=10) == 1
    assert (await parts.job(job_id)).attempts == 1


async def test_a_job_canceled_through_another_process_is_aborted(parts: Parts) -> None:
    parts.transport.delay = 5
    [job_id] = await parts.submit()
    dispatcher = parts.hub.dispatcher
    assert await dispatcher.tick() == 1
    await asyncio.sleep(0.05)
    assert parts.transport.in_flight == 1
    async with parts.hub.database.transaction() as session:  # as another hub process would
        await q.cancel(session, job_ids=[job_id], now=utcnow())
    await dispatcher.tick()
    await asyncio.sleep(0.05)
    assert parts.transport.aborted == 1 and parts.transport.in_flight == 0
    assert (await parts.job(job_id)).status == "CANCELED" and not dispatcher._running


async def test_leases_are_renewed_while_a_job_runs(parts: Parts) -> None:
    parts.transport.delay = 4.0  # well past the 1.5 s lease (renewed, never lost even on a loaded machine)
    [job_id] = await parts.submit()
    await parts.hub.dispatcher.start()
    deadline = asyncio.get_running_loop().time() + 10
    while (await parts.job(job_id)).status != "PROCESSED":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    job = await parts.job(job_id)
    assert job.attempts == 1 and parts.transport.sent == 1
    assert parts.hub.dispatcher.stats.reaped == 0


async def test_a_dead_dispatchers_job_is_reaped_and_run_again(parts: Parts) -> None:
    [job_id] = await parts.submit()
    now = utcnow()
    async with parts.hub.database.transaction() as session:
        await q.claim(
            session, job_ids=[job_id], owner="gone:1:x", now=now, lease_until=now - timedelta(seconds=1)
        )
    assert await parts.hub.dispatcher.run_burst(timeout_s=10) == 1
    job = await parts.job(job_id)
    assert job.status == "PROCESSED" and job.attempts == 2 and parts.hub.dispatcher.stats.reaped == 1


async def test_stop_hands_running_jobs_back_to_the_queue(parts: Parts) -> None:
    parts.transport.delay = 5
    [job_id] = await parts.submit()
    dispatcher = parts.hub.dispatcher
    await dispatcher.start()
    for _ in range(250):
        if parts.transport.in_flight:
            break
        await asyncio.sleep(0.02)
    summary = await parts.hub.jobs.summary(parts.principal.user_id)
    assert summary["counts"]["PROCESSING"] == 1 and summary["dispatcher"]["alive"] is True
    await dispatcher.stop()
    job = await parts.job(job_id)
    assert job.status == "QUEUED" and job.attempts == 0 and parts.transport.aborted == 1
    assert dispatcher.pulse()["alive"] is False
