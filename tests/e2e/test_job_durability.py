"""A job accepted is never lost: kill -9 the hub or the agent mid-run, and every job still
ends PROCESSED exactly once. On PostgreSQL two hub processes share the queue without
running a job twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_club.testing.servers import ProcessHandle, free_port
from tests.conftest import _truncate_all
from tests.e2e.conftest import start_agent, start_fake_engine, start_hub, wait_for_model
from tests.e2e.job_helpers import (
    client,
    embedding_agent_config,
    engine_stats,
    job_completions,
    submit_jobs,
    wait_all_ended,
    wait_until,
)

pytestmark = pytest.mark.e2e

LEASE_S = 4.0
FAST_QUEUE = {
    "IC_JOB_LEASE_S": str(LEASE_S),
    "IC_JOB_POLL_INTERVAL_S": "0.2",
    "IC_JOB_RETRY_BASE_S": "0.5",
    "IC_JOB_RETRY_MAX_S": "4",
}


def test_killing_the_hub_mid_run_loses_no_job(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    port = free_port()
    hub = start_hub(tmp_path, port=port, env=FAST_QUEUE)
    processes.append(hub.handle)
    config = embedding_agent_config(tmp_path / "agent.toml", engine_url, max_concurrency=10)
    agent = start_agent(tmp_path, hub.url, hub.key, "rig", config)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-embed", process=agent)

    with client(hub.url, hub.key) as http:
        ids = submit_jobs(http, 50, latency_s=1.5)
        wait_until(
            lambda: engine_stats(engine_url)["in_flight"] == 10,
            20,
            "ten jobs never ran at once",
            hub.handle,
            agent,
        )
        in_flight = engine_stats(engine_url)["in_flight"]
        hub.handle.kill()
        killed_at = time.monotonic()
        # The agent aborts the engine requests of the dead hub at once; nothing is left running.
        wait_until(
            lambda: engine_stats(engine_url)["in_flight"] == 0, 2.0, "engine requests still running", agent
        )
        stats = engine_stats(engine_url)
        assert stats["aborted"] >= in_flight - 1, stats
        completed_before = job_completions(stats)

        restarted = start_hub(tmp_path, port=port, data_dir=hub.data_dir, env=FAST_QUEUE, name="hub-2")
        processes.append(restarted.handle)
        # Orphaned jobs (their leases expire) run again well within a minute.
        wait_until(
            lambda: engine_stats(engine_url)["in_flight"] > 0,
            30,
            "orphaned jobs never ran again",
            restarted.handle,
            agent,
        )
        assert time.monotonic() - killed_at < 60
        jobs = wait_all_ended(http, ids, 90, restarted.handle, agent)

    assert {j["status"] for j in jobs.values()} == {"PROCESSED"}, [
        j for j in jobs.values() if j["status"] != "PROCESSED"
    ]
    assert all("result" not in j for j in jobs.values())  # lists leave results out ...
    with client(restarted.url, hub.key) as http:
        for job_id in ids:
            job = http.get(f"/v1/jobs/{job_id}").json()
            assert job["result"]["data"][0]["embedding"], job  # ... the detail has exactly one
    retried = [j for j in jobs.values() if j["attempts"] == 2]  # the lost attempt counts
    assert len(retried) >= in_flight - 1 and all(j["attempts"] <= 2 for j in jobs.values())
    final = engine_stats(engine_url)
    # Every job completed on the engine once; at most one answer was in flight at the kill.
    assert 50 <= job_completions(final) <= 51, (final, completed_before)


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
def test_killing_the_agent_mid_run_loses_no_job(
    tmp_path: Path, processes: list[ProcessHandle], transport: str
) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    env = {**FAST_QUEUE, "IC_JOB_MAX_ATTEMPTS": "6"}
    hub = start_hub(tmp_path, env=env)
    processes.append(hub.handle)
    config = embedding_agent_config(tmp_path / "agent.toml", engine_url, max_concurrency=10)
    agent = start_agent(tmp_path, hub.url, hub.key, "rig", config, transport=transport)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-embed", process=agent)

    with client(hub.url, hub.key) as http:
        ids = submit_jobs(http, 50, latency_s=1.0)
        wait_until(
            lambda: engine_stats(engine_url)["in_flight"] == 10,
            20,
            "ten jobs never ran at once",
            hub.handle,
            agent,
        )
        in_flight = engine_stats(engine_url)["in_flight"]
        agent.kill()
        # The engine sees its client go away and stops; the hub retries on the next agent.
        wait_until(lambda: engine_stats(engine_url)["in_flight"] == 0, 2.0, "engine requests still running")
        assert engine_stats(engine_url)["aborted"] >= in_flight - 1
        again = start_agent(tmp_path, hub.url, hub.key, "rig", config, transport=transport)
        processes.append(again)
        jobs = wait_all_ended(http, ids, 90, hub.handle, again)

    assert {j["status"] for j in jobs.values()} == {"PROCESSED"}, [
        j for j in jobs.values() if j["status"] != "PROCESSED"
    ]
    assert sum(1 for j in jobs.values() if j["attempts"] > 1) >= in_flight - 1
    final = engine_stats(engine_url)
    assert 50 <= job_completions(final) <= 51, final


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    asyncio.run(_truncate_all(postgres_database))
    yield postgres_database


def test_two_hub_processes_on_postgres_never_run_a_job_twice(
    tmp_path: Path, processes: list[ProcessHandle], postgres_url: str
) -> None:
    import asyncpg

    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    env = {**FAST_QUEUE, "IC_DATABASE_URL": postgres_url}
    first = start_hub(tmp_path, env=env, data_dir=tmp_path / "data-1", name="hub-a")
    processes.append(first.handle)
    assert first.key, first.handle.log_text()
    config = embedding_agent_config(tmp_path / "agent.toml", engine_url, max_concurrency=4)
    agent = start_agent(tmp_path, first.url, first.key, "rig", config)
    processes.append(agent)
    wait_for_model(first.url, first.key, "fake-embed", process=agent)
    # The second hub reads the provider from the shared database when it starts.
    second = start_hub(tmp_path, env=env, data_dir=tmp_path / "data-2", name="hub-b")
    processes.append(second.handle)
    wait_for_model(second.url, first.key, "fake-embed")

    with client(first.url, first.key) as one, client(second.url, first.key) as two:
        ids = [*submit_jobs(one, 40, latency_s=0.3, tag="a"), *submit_jobs(two, 40, latency_s=0.3, tag="b")]
        jobs = wait_all_ended(one, ids, 60, first.handle, second.handle, agent)
    assert {j["status"] for j in jobs.values()} == {"PROCESSED"}
    assert all(j["attempts"] == 1 for j in jobs.values())
    assert engine_stats(engine_url)["requests"]["/v1/embeddings"] == 80

    async def owners() -> list[str]:
        conn = await asyncpg.connect(postgres_url)
        try:
            rows = await conn.fetch("SELECT DISTINCT split_part(lease_owner, ':', 2) AS pid FROM jobs")
        finally:
            await conn.close()
        return [r["pid"] for r in rows]

    pids = asyncio.run(owners())
    assert set(pids) == {str(first.handle.pid), str(second.handle.pid)}, pids
