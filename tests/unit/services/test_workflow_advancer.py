"""The workflow advancer: a run's job ending here marks the run, the sweep finds runs changed
elsewhere, a run that is gone is skipped, and the loop advances runs on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference_club.domain.clock import utcnow
from inference_club.domain.endpoints import BY_NAME
from inference_club.store import jobs as q
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path, workflow_sweep_interval_s=3600.0) as built:
        yield built


REPLY = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
SPEC = {"steps": [{"id": "a", "kind": "inference", "type": "llm", "body": {"prompt": "x"}}]}


async def create(built: Built) -> tuple[str, str]:
    """A run of one LLM step; (run id, its job's id)."""
    run, _ = await built.hub.workflows.create(built.principal, {"spec": SPEC}, base_url="b", request_id="r")
    return run["id"], run["steps"][0]["jobs"][0]["id"]


async def status(built: Built, run_id: str) -> Any:
    return (await built.hub.workflows.get(built.principal.user_id, run_id))["status"]


async def test_a_run_whose_job_ends_here_is_advanced_by_the_next_tick(built: Built) -> None:
    advancer = built.hub.advancer
    await advancer.run_burst()  # the first sweep: nothing to do yet
    run_id, job_id = await create(built)
    await built.claim(job_id)
    claimed = await built.job(job_id)
    built.hub.signals.publish(claimed)  # PROCESSING: not an end, nothing marked
    assert await advancer.tick() == 0 and "dirty=0" in repr(advancer)
    await built.finish(job_id, result=REPLY)
    assert "dirty=1" in repr(advancer)
    assert await advancer.tick() == 1
    assert await status(built, run_id) == "DONE"


async def test_jobs_outside_runs_mark_nothing(built: Built) -> None:
    job, _ = await built.hub.jobs.submit(
        built.principal,
        BY_NAME["embeddings"],
        "emb",
        {"model": "emb", "input": "x"},
        base_url="b",
        request_id="req_9",
    )
    await built.finish(job.id, result={"data": [{"embedding": [1]}]})
    assert "dirty=0" in repr(built.hub.advancer)


async def test_the_sweep_finds_a_run_changed_without_a_signal(built: Built) -> None:
    run_id, job_id = await create(built)
    claimed = await built.claim(job_id)
    async with built.hub.database.transaction() as session:  # as another hub process records it
        await q.finish(
            session,
            job_id=job_id,
            owner="unit",
            attempt=claimed.attempts,
            status="PROCESSED",
            now=utcnow(),
            result=REPLY,
        )
    advancer = built.hub.advancer
    assert await advancer.run_burst() == 1
    assert await status(built, run_id) == "DONE"
    assert advancer.passes >= 1


async def test_a_run_that_is_gone_is_skipped_and_the_rest_advance(built: Built) -> None:
    run_id, job_id = await create(built)
    await built.finish(job_id, result=REPLY)
    advancer = built.hub.advancer
    advancer._next_sweep = time.monotonic() + 3600  # no sweep: only what is marked
    advancer.mark("run_gone")
    assert await advancer.tick() == 1
    assert await status(built, run_id) == "DONE"


async def test_the_loop_advances_runs_until_stopped(built: Built) -> None:
    advancer = built.hub.advancer
    await advancer.start()
    try:
        run_id, job_id = await create(built)
        await built.finish(job_id, result=REPLY)
        deadline = time.monotonic() + 10
        while await status(built, run_id) != "DONE":
            assert time.monotonic() < deadline, "the advancer did not finish the run"
            await asyncio.sleep(0.01)
    finally:
        await advancer.stop()
    assert "idle" in repr(advancer)
