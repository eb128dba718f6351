"""Workflow runs, steps, step jobs and events: owners, pages, once-only step jobs, event order."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store import workflows as q
from inference_club.store.tables import Job, WorkflowJob, WorkflowRun, WorkflowStep
from tests.unit.store.conftest import Store


def make_run(user_id: str, status: str = "RUNNING") -> WorkflowRun:
    return WorkflowRun(
        id=new_id("wfr"),
        user_id=user_id,
        spec={"steps": []},
        inputs={},
        status=status,
        base_url="http://hub",
        event_seq=0,
        created_at=utcnow(),
    )


def make_step(run_id: str, step_id: str, position: int) -> WorkflowStep:
    return WorkflowStep(run_id=run_id, step_id=step_id, position=position, kind="inference", status="PENDING")


def make_job(user_id: str, status: str = "QUEUED") -> Job:
    now = utcnow()
    return Job(
        id=new_id("job"),
        user_id=user_id,
        endpoint="chat.completions",
        model="m",
        body={},
        status=status,
        attempts=0,
        max_attempts=1,
        request_id="r",
        base_url="http://hub",
        files=[],
        error={"message": "boom"} if status == "FAILED" else None,
        created_at=now,
        queued_at=now,
        run_after=now,
    )


async def add(store: Store, run: WorkflowRun, *step_ids: str) -> None:
    async with store.db.transaction() as session:
        await q.add_run(session, run=run, steps=[make_step(run.id, s, i) for i, s in enumerate(step_ids)])


async def test_runs_are_their_owners_and_lock_run_reads_them(store: Store) -> None:
    run = make_run(store.alice)
    await add(store, run, "b", "a")
    async with store.db.transaction() as session:
        assert await q.lock_run(session, run_id=run.id, user_id=store.bob) is None
        assert await q.lock_run(session, run_id="wfr_missing") is None
        locked = await q.lock_run(session, run_id=run.id, user_id=store.alice)
        assert locked is not None and locked.id == run.id
    async with store.db.read() as session:
        assert await q.get_run(session, run_id=run.id, user_id=store.bob) is None
        assert await q.get_run(session, run_id=run.id, user_id=None) is not None
        assert [s.step_id for s in await q.steps(session, run_id=run.id)] == ["b", "a"]  # by position


async def test_listing_pages_and_status_counts(store: Store) -> None:
    runs = [make_run(store.alice, status) for status in ("RUNNING", "SUCCEEDED", "RUNNING", "FAILED")]
    for run in runs:
        await add(store, run)
    await add(store, make_run(store.bob, "RUNNING"))
    newest = sorted((r.id for r in runs), reverse=True)
    running = sorted((r.id for r in runs if r.status == "RUNNING"), reverse=True)
    async with store.db.read() as session:
        page = await q.list_runs(session, user_id=store.alice, statuses=[], limit=3, after=None)
        rest = await q.list_runs(session, user_id=store.alice, statuses=[], limit=3, after=page[-1].id)
        assert [r.id for r in page] + [r.id for r in rest] == newest
        mine = await q.list_runs(session, user_id=store.alice, statuses=["RUNNING"], limit=9, after=None)
        assert [r.id for r in mine] == running
        assert len(await q.run_ids_with_status(session, statuses=["RUNNING"], limit=9)) == 3  # every user's
        assert len(await q.run_ids_with_status(session, statuses=["RUNNING"], limit=2)) == 2
        assert await q.count_in(session, statuses=["RUNNING", "FAILED"], limit=100) == {
            "RUNNING": 3,
            "FAILED": 1,
        }
        assert sum((await q.count_in(session, statuses=["RUNNING", "FAILED"], limit=2)).values()) == 2


async def test_a_step_attempts_jobs_are_submitted_once(store: Store) -> None:
    run = make_run(store.alice)
    await add(store, run, "s")
    jobs = [make_job(store.alice), make_job(store.alice, "FAILED")]
    links = [
        WorkflowJob(job_id=j.id, run_id=run.id, step_id="s", attempt=1, item_index=i)
        for i, j in enumerate(jobs)
    ]
    async with store.db.transaction() as session:
        await q.add_step_jobs(session, jobs=jobs, links=links)
    again = make_job(store.alice)
    with pytest.raises(IntegrityError):
        async with store.db.transaction() as session:
            await q.add_step_jobs(
                session,
                jobs=[again],
                links=[WorkflowJob(job_id=again.id, run_id=run.id, step_id="s", attempt=1, item_index=0)],
            )
    async with store.db.read() as session:
        pairs = await q.step_jobs(session, run_id=run.id)
        assert [(link.item_index, job.id) for link, job in pairs] == [(0, jobs[0].id), (1, jobs[1].id)]
        refs = await q.step_job_refs(session, run_id=run.id)
        assert [(r.job_id, r.status, r.error) for r in refs] == [
            (jobs[0].id, "QUEUED", None),
            (jobs[1].id, "FAILED", {"message": "boom"}),
        ]
        assert set(await q.jobs_by_id(session, job_ids=[jobs[1].id, again.id])) == {
            jobs[1].id
        }  # again rolled back
        assert await q.jobs_by_id(session, job_ids=[]) == {}
        assert await q.run_of_job(session, job_id=jobs[0].id) == run.id
        assert await q.run_of_job(session, job_id=again.id) is None


async def test_events_are_numbered_per_run_and_read_after_a_sequence(store: Store) -> None:
    run, other = make_run(store.alice), make_run(store.alice)
    await add(store, run)
    await add(store, other)
    async with store.db.transaction() as session:
        locked = await q.lock_run(session, run_id=run.id)
        assert locked is not None
        seqs = [
            await q.add_event(session, run=locked, data={"type": "step", "n": n}, now=utcnow())
            for n in range(3)
        ]
        locked_other = await q.lock_run(session, run_id=other.id)
        assert locked_other is not None
        assert await q.add_event(session, run=locked_other, data={"type": "run"}, now=utcnow()) == 1
    assert seqs == [1, 2, 3]
    async with store.db.read() as session:
        after = await q.events_after(session, run_id=run.id, seq=1, limit=10)
        assert [(e.seq, e.data) for e in after] == [
            (2, {"type": "step", "n": 1, "seq": 2}),
            (3, {"type": "step", "n": 2, "seq": 3}),
        ]
        assert [e.seq for e in await q.events_after(session, run_id=run.id, seq=0, limit=1)] == [1]
        stored = await q.get_run(session, run_id=run.id, user_id=store.alice)
        assert stored is not None and stored.event_seq == 3
