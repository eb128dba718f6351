"""Engine progress on jobs: request ids of job attempts, reports clamped and coalesced, written
only onto the reporting user's running attempt, and published to the job's watchers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.domain.endpoints import BY_NAME
from inference_club.services.progress import MAX_STAGE, parse_request_id
from inference_club.store.tables import Job
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


async def running_job(built: Built) -> Job:
    job, _ = await built.hub.jobs.submit(
        built.principal,
        BY_NAME["embeddings"],
        "emb",
        {"model": "emb", "input": "x"},
        base_url="b",
        request_id="r",
    )
    return await built.claim(job.id)


@pytest.mark.parametrize(
    ("request_id", "parsed"),
    [
        ("job_x.2", ("job_x", 2)),
        ("a.b.10", ("a.b", 10)),
        ("req_1", None),
        ("job_x.", None),
        (".3", None),
        ("job.x1", None),
    ],
)
def test_only_a_job_attempts_request_id_names_a_job(request_id: str, parsed: tuple[str, int] | None) -> None:
    assert parse_request_id(request_id) == parsed


async def test_a_report_is_written_clamped_and_published(built: Built) -> None:
    job = await running_job(built)
    board = built.hub.progress
    with built.hub.signals.subscribe(job.id) as events:
        assert board.report(built.principal.user_id, f"{job.id}.{job.attempts}", 1.7, "s" * 500)
        await board.flush()
        async with asyncio.timeout(5):
            event = await events.get()
    progress = (await built.job(job.id)).progress
    assert progress is not None and progress["value"] == 1.0 and len(progress["stage"]) == MAX_STAGE
    assert event.payload["progress"] == progress and board.written == 1
    board.report(built.principal.user_id, f"{job.id}.{job.attempts}", -3, "start")
    await board.flush()
    progress = (await built.job(job.id)).progress
    assert progress is not None and progress["value"] == 0.0


async def test_reports_for_a_job_are_coalesced_to_the_newest(built: Built) -> None:
    job = await running_job(built)
    board = built.hub.progress
    for value in (0.1, 0.2, 0.3):
        board.report(built.principal.user_id, f"{job.id}.{job.attempts}", value, f"at {value}")
    await board.flush()
    progress = (await built.job(job.id)).progress
    assert progress is not None and (progress["value"], progress["stage"]) == (0.3, "at 0.3")
    assert board.written == 1


async def test_nothing_is_written_for_another_user_attempt_or_an_ended_job(built: Built) -> None:
    job = await running_job(built)
    board = built.hub.progress
    bob = await built.user("bob")
    assert not board.report(built.principal.user_id, "req_sync_call", 0.5, "ignored")
    board.report(bob.user_id, f"{job.id}.{job.attempts}", 0.5, "not yours")
    await board.flush()
    board.report(built.principal.user_id, f"{job.id}.{job.attempts + 1}", 0.5, "a later attempt")
    await board.flush()
    assert (await built.job(job.id)).progress is None
    await built.finish(job.id, result={})
    board.report(built.principal.user_id, f"{job.id}.{job.attempts}", 0.5, "too late")
    await board.flush()
    assert (await built.job(job.id)).progress is None and board.written == 0


async def test_the_background_writer_records_reports_on_its_own(built: Built) -> None:
    job = await running_job(built)
    board = built.hub.progress
    board.report(built.principal.user_id, f"{job.id}.{job.attempts}", 0.5, "half")
    deadline = time.monotonic() + 5
    while (await built.job(job.id)).progress is None:
        assert time.monotonic() < deadline, "the report was never written"
        await asyncio.sleep(0.01)
    await board.stop()
    assert "written=1" in repr(board)
