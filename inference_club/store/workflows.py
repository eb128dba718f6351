"""Queries on workflow runs, steps, step jobs and run events. Keyword-only; never commit.

Whoever changes a run first takes its lock with :func:`lock_run` (an ``UPDATE`` of the
run's row: a row lock on PostgreSQL, the write lock on SQLite), so hub processes and
tasks that advance the same run take turns and each sees the others' committed work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import Job, WorkflowEvent, WorkflowJob, WorkflowRun, WorkflowStep


async def add_run(session: AsyncSession, *, run: WorkflowRun, steps: Sequence[WorkflowStep]) -> None:
    session.add(run)
    await session.flush()
    session.add_all(steps)
    await session.flush()


async def lock_run(session: AsyncSession, *, run_id: str, user_id: str | None = None) -> WorkflowRun | None:
    """Take the run's lock for this transaction and read it (``None``: no such run)."""
    await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id == run_id)
        .values(event_seq=WorkflowRun.event_seq)
        .execution_options(synchronize_session=False)
    )
    run = await session.get(WorkflowRun, run_id, populate_existing=True)
    if run is None or (user_id is not None and run.user_id != user_id):
        return None
    return run


async def get_run(session: AsyncSession, *, run_id: str, user_id: str | None) -> WorkflowRun | None:
    run = await session.get(WorkflowRun, run_id, populate_existing=True)
    if run is None or (user_id is not None and run.user_id != user_id):
        return None
    return run


async def list_runs(
    session: AsyncSession, *, user_id: str, statuses: Sequence[str], limit: int, after: str | None
) -> Sequence[WorkflowRun]:
    query = select(WorkflowRun).where(WorkflowRun.user_id == user_id)
    if statuses:
        query = query.where(WorkflowRun.status.in_(statuses))
    if after:
        query = query.where(WorkflowRun.id < after)
    return (await session.execute(query.order_by(WorkflowRun.id.desc()).limit(limit))).scalars().all()


async def run_ids_with_status(session: AsyncSession, *, statuses: Sequence[str], limit: int) -> list[str]:
    query = (
        select(WorkflowRun.id).where(WorkflowRun.status.in_(statuses)).order_by(WorkflowRun.id).limit(limit)
    )
    return list((await session.execute(query)).scalars().all())


async def count_in(session: AsyncSession, *, statuses: Sequence[str], limit: int) -> dict[str, int]:
    """Runs in each of ``statuses``, counting at most ``limit`` rows (a metrics scrape stays cheap)."""
    rows = select(WorkflowRun.status).where(WorkflowRun.status.in_(statuses)).limit(limit).subquery()
    query = select(rows.c.status, func.count()).group_by(rows.c.status)
    return {str(status): int(count) for status, count in (await session.execute(query)).all()}


async def steps(session: AsyncSession, *, run_id: str) -> list[WorkflowStep]:
    query = (
        select(WorkflowStep)
        .where(WorkflowStep.run_id == run_id)
        .order_by(WorkflowStep.position)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(query)).scalars().all())


async def step_jobs(session: AsyncSession, *, run_id: str) -> list[tuple[WorkflowJob, Job]]:
    """Every job of the run with its tag, in (step, attempt, item) order."""
    query = (
        select(WorkflowJob, Job)
        .join(Job, Job.id == WorkflowJob.job_id)
        .where(WorkflowJob.run_id == run_id)
        .order_by(WorkflowJob.step_id, WorkflowJob.attempt, WorkflowJob.item_index)
        .execution_options(populate_existing=True)
    )
    return [(link, job) for link, job in (await session.execute(query)).all()]


@dataclass(frozen=True, slots=True)
class StepJobRef:
    """What advancing a run needs to know of a step's job (no bodies or results)."""

    job_id: str
    step_id: str
    attempt: int
    item_index: int
    status: str
    error: dict[str, Any] | None


async def step_job_refs(session: AsyncSession, *, run_id: str) -> list[StepJobRef]:
    query = (
        select(
            WorkflowJob.job_id,
            WorkflowJob.step_id,
            WorkflowJob.attempt,
            WorkflowJob.item_index,
            Job.status,
            Job.error,
        )
        .join(Job, Job.id == WorkflowJob.job_id)
        .where(WorkflowJob.run_id == run_id)
        .order_by(WorkflowJob.step_id, WorkflowJob.attempt, WorkflowJob.item_index)
    )
    return [StepJobRef(*row) for row in (await session.execute(query)).all()]


async def jobs_by_id(session: AsyncSession, *, job_ids: Sequence[str]) -> dict[str, Job]:
    if not job_ids:
        return {}
    query = select(Job).where(Job.id.in_(job_ids)).execution_options(populate_existing=True)
    return {job.id: job for job in (await session.execute(query)).scalars().all()}


async def add_step_jobs(session: AsyncSession, *, jobs: Sequence[Job], links: Sequence[WorkflowJob]) -> None:
    session.add_all(jobs)
    await session.flush()
    session.add_all(links)
    await session.flush()


async def run_of_job(session: AsyncSession, *, job_id: str) -> str | None:
    value: str | None = (
        await session.execute(select(WorkflowJob.run_id).where(WorkflowJob.job_id == job_id))
    ).scalar_one_or_none()
    return value


async def add_event(session: AsyncSession, *, run: WorkflowRun, data: dict[str, Any], now: datetime) -> int:
    """Append an event to a locked run; returns its sequence number."""
    run.event_seq = (run.event_seq or 0) + 1
    session.add(
        WorkflowEvent(run_id=run.id, seq=run.event_seq, data={**data, "seq": run.event_seq}, created_at=now)
    )
    await session.flush()
    return run.event_seq


async def events_after(session: AsyncSession, *, run_id: str, seq: int, limit: int) -> list[WorkflowEvent]:
    query = (
        select(WorkflowEvent)
        .where(WorkflowEvent.run_id == run_id, WorkflowEvent.seq > seq)
        .order_by(WorkflowEvent.seq)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars().all())
