"""Queries on jobs, batches and idempotency keys. Keyword-only; they never commit.

Every change of a job's state is one conditional ``UPDATE`` (the ``WHERE`` names the
state it expects), so two dispatchers can never both move the same job: the loser
updates no row. On PostgreSQL claims first lock their rows with
``FOR UPDATE SKIP LOCKED``, so concurrent hub processes pass over each other's
claims instead of waiting on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.domain.jobs import ACTIVE, RETRYABLE, JobStatus, QueuedRef
from inference_club.store.tables import Batch, IdempotencyKey, Job

_BUMP = {"revision": Job.revision + 1}


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --------------------------------------------------------------------------- reading


async def add_jobs(session: AsyncSession, *, jobs: Sequence[Job]) -> None:
    session.add_all(jobs)
    await session.flush()


async def get_job(session: AsyncSession, *, job_id: str, user_id: str | None) -> Job | None:
    """``user_id=None`` skips the owner check (the dispatcher's own reads)."""
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None or (user_id is not None and job.user_id != user_id):
        return None
    return job


async def list_jobs(
    session: AsyncSession,
    *,
    user_id: str,
    statuses: Sequence[str] = (),
    batch_id: str | None = None,
    limit: int,
    after: str | None = None,
) -> Sequence[Job]:
    """Newest first; ``after`` is the last id of the previous page."""
    query = select(Job).where(Job.user_id == user_id)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if batch_id is not None:
        query = query.where(Job.batch_id == batch_id)
    if after:
        query = query.where(Job.id < after)
    return (await session.execute(query.order_by(Job.id.desc()).limit(limit))).scalars().all()


async def status_counts(session: AsyncSession, *, user_id: str | None) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    return {str(status): int(count) for status, count in (await session.execute(query)).all()}


async def count_in(session: AsyncSession, *, statuses: Sequence[str], limit: int) -> dict[str, int]:
    """Jobs in each of ``statuses``, counting at most ``limit`` rows (a metrics scrape stays cheap)."""
    rows = select(Job.status).where(Job.status.in_(statuses)).limit(limit).subquery()
    query = select(rows.c.status, func.count()).group_by(rows.c.status)
    return {str(status): int(count) for status, count in (await session.execute(query)).all()}


async def oldest_queued_at(session: AsyncSession, *, user_id: str | None) -> datetime | None:
    query = select(func.min(Job.queued_at)).where(Job.status == JobStatus.QUEUED)
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    value: datetime | None = (await session.execute(query)).scalar_one_or_none()
    return value


async def revisions(session: AsyncSession, *, job_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``id → (status, revision)``: cheap change detection for watchers."""
    if not job_ids:
        return {}
    rows = await session.execute(select(Job.id, Job.status, Job.revision).where(Job.id.in_(job_ids)))
    return {job_id: (status, revision) for job_id, status, revision in rows.all()}


# --------------------------------------------------------------------------- claiming


async def claimable(session: AsyncSession, *, now: datetime, per_user: int, limit: int) -> list[QueuedRef]:
    """Queued jobs due to run: each user's ``per_user`` oldest, ranked within the user."""
    rank = func.row_number().over(partition_by=Job.user_id, order_by=(Job.queued_at, Job.id)).label("rank")
    inner = (
        select(Job.id, Job.user_id, Job.endpoint, Job.model, Job.queued_at, rank)
        .where(Job.status == JobStatus.QUEUED, Job.run_after <= now)
        .subquery()
    )
    query = (
        select(inner.c.id, inner.c.user_id, inner.c.rank, inner.c.endpoint, inner.c.model, inner.c.queued_at)
        .where(inner.c.rank <= per_user)
        .order_by(inner.c.rank, inner.c.queued_at, inner.c.id)
        .limit(limit)
    )
    return [
        QueuedRef(id=i, user_id=u, rank=int(r), endpoint=e, model=m, queued_at=t)
        for i, u, r, e, m, t in (await session.execute(query)).all()
    ]


def _claim_values(owner: str, now: datetime, lease_until: datetime) -> dict[str, Any]:
    return {
        "status": JobStatus.PROCESSING,
        "attempts": Job.attempts + 1,
        "lease_owner": owner,
        "lease_expires_at": lease_until,
        "started_at": now,
        "finished_at": None,
        "progress": None,
        **_BUMP,
    }


async def claim(
    session: AsyncSession, *, job_ids: Sequence[str], owner: str, now: datetime, lease_until: datetime
) -> list[Job]:
    """Move these jobs from QUEUED (and due) to PROCESSING under ``owner``'s lease;
    returns those won."""
    if not job_ids:
        return []
    ids = list(job_ids)
    due = and_(Job.status == JobStatus.QUEUED, Job.run_after <= now)
    if _is_postgres(session):
        locked = select(Job.id).where(Job.id.in_(ids), due).with_for_update(skip_locked=True)
        ids = list((await session.execute(locked)).scalars().all())
        if not ids:
            return []
    statement = (
        update(Job)
        .where(Job.id.in_(ids), due)
        .values(_claim_values(owner, now, lease_until))
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(statement)).scalars().all())


async def claim_next(
    session: AsyncSession, *, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[Job]:
    """Claim the oldest due jobs, whoever they belong to (``SKIP LOCKED`` on PostgreSQL)."""
    query = (
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED, Job.run_after <= now)
        .order_by(Job.queued_at, Job.id)
        .limit(limit)
    )
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    ids = list((await session.execute(query)).scalars().all())
    return await claim(session, job_ids=ids, owner=owner, now=now, lease_until=lease_until)


def _held(job_id: str, owner: str, attempt: int) -> Any:
    """The job is still this dispatcher's current attempt."""
    return and_(
        Job.id == job_id,
        Job.status == JobStatus.PROCESSING,
        Job.lease_owner == owner,
        Job.attempts == attempt,
    )


async def _update_one(session: AsyncSession, where: Any, values: dict[str, Any]) -> Job | None:
    statement = (
        update(Job)
        .where(where)
        .values({**values, **_BUMP})
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalars().first()


async def set_progress(
    session: AsyncSession, *, job_id: str, attempt: int, user_id: str, progress: dict[str, Any]
) -> Job | None:
    """Record engine progress on the job's running attempt (no row: not running any more)."""
    return await _update_one(
        session,
        and_(
            Job.id == job_id,
            Job.user_id == user_id,
            Job.status == JobStatus.PROCESSING,
            Job.attempts == attempt,
        ),
        {"progress": progress},
    )


async def unclaim(session: AsyncSession, *, job_id: str, owner: str, attempt: int) -> Job | None:
    """Give a claim back without counting it (no free slot after all, or shutting down)."""
    return await _update_one(
        session,
        _held(job_id, owner, attempt),
        {
            "status": JobStatus.QUEUED,
            "attempts": Job.attempts - 1,
            "lease_expires_at": None,
            "started_at": None,
        },
    )


async def requeue(
    session: AsyncSession,
    *,
    job_id: str,
    owner: str,
    attempt: int,
    run_after: datetime,
    error: dict[str, Any],
) -> Job | None:
    """A transient failure with attempts left: queue again after a backoff."""
    return await _update_one(
        session,
        _held(job_id, owner, attempt),
        {"status": JobStatus.QUEUED, "run_after": run_after, "lease_expires_at": None, "error": error},
    )


async def finish(
    session: AsyncSession,
    *,
    job_id: str,
    owner: str,
    attempt: int,
    status: str,
    now: datetime,
    result: Any = None,
    result_url: str | None = None,
    files: list[Any] | None = None,
    error: dict[str, Any] | None = None,
    provider_id: str | None = None,
    provider_name: str | None = None,
) -> Job | None:
    """Record the end of this attempt (PROCESSED or FAILED); ``None`` if the job was
    canceled or taken over meanwhile, in which case the result must be dropped."""
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "lease_expires_at": None,
        "error": error,
        "result": result,
        "result_url": result_url,
        "files": files or [],
    }
    if provider_id is not None:
        values.update(provider_id=provider_id, provider_name=provider_name)
    return await _update_one(session, _held(job_id, owner, attempt), values)


async def fail_queued(
    session: AsyncSession, *, job_id: str, now: datetime, error: dict[str, Any]
) -> Job | None:
    """A queued job that cannot run (no provider within its queue timeout, owner gone)."""
    return await _update_one(
        session,
        and_(Job.id == job_id, Job.status == JobStatus.QUEUED),
        {"status": JobStatus.FAILED, "finished_at": now, "error": error},
    )


async def renew(session: AsyncSession, *, job_ids: Sequence[str], owner: str, lease_until: datetime) -> None:
    if not job_ids:
        return
    await session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.PROCESSING, Job.lease_owner == owner)
        .values(lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    )


async def lost(session: AsyncSession, *, job_ids: Sequence[str], owner: str) -> list[str]:
    """Of the jobs this dispatcher runs, those it no longer holds (canceled, reaped)."""
    if not job_ids:
        return []
    query = select(Job.id).where(
        Job.id.in_(job_ids),
        or_(Job.status != JobStatus.PROCESSING, Job.lease_owner != owner),
    )
    return list((await session.execute(query)).scalars().all())


async def reap(session: AsyncSession, *, now: datetime) -> list[Job]:
    """Expired leases (their dispatcher died): queue again, or fail when attempts are used up.

    The lost attempt counts; its error says so.
    """
    expired = and_(Job.status == JobStatus.PROCESSING, Job.lease_expires_at < now)
    message = "The hub process running this job stopped; its lease expired."
    rows = (await session.execute(select(Job.id, Job.attempts).where(expired))).all()
    changed: list[Job] = []
    for job_id, attempts in rows:
        info = {"message": message, "type": "lease_expired", "attempt": attempts}
        job = await _update_one(
            session,
            and_(Job.id == job_id, expired, Job.attempts == attempts, Job.attempts < Job.max_attempts),
            {"status": JobStatus.QUEUED, "run_after": now, "lease_expires_at": None, "error": info},
        )
        if job is None:
            job = await _update_one(
                session,
                and_(Job.id == job_id, expired, Job.attempts == attempts),
                {"status": JobStatus.FAILED, "finished_at": now, "lease_expires_at": None, "error": info},
            )
        if job is not None:
            changed.append(job)
    return changed


# --------------------------------------------------------------------------- by the user


async def cancel(session: AsyncSession, *, job_ids: Sequence[str], now: datetime) -> list[Job]:
    """QUEUED or PROCESSING → CANCELED; returns the jobs that changed."""
    if not job_ids:
        return []
    statement = (
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(ACTIVE))
        .values(status=JobStatus.CANCELED, finished_at=now, lease_expires_at=None, **_BUMP)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(statement)).scalars().all())


async def retry(session: AsyncSession, *, job_id: str, now: datetime) -> Job | None:
    """FAILED or CANCELED → QUEUED with fresh attempts; ``None`` in any other state."""
    return await _update_one(
        session,
        and_(Job.id == job_id, Job.status.in_(RETRYABLE)),
        {
            "status": JobStatus.QUEUED,
            "attempts": 0,
            "error": None,
            "result": None,
            "result_url": None,
            "files": [],
            "queued_at": now,
            "run_after": now,
            "started_at": None,
            "finished_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "provider_id": None,
            "provider_name": None,
        },
    )


async def active_ids(session: AsyncSession, *, batch_id: str) -> list[str]:
    query = select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(ACTIVE))
    return list((await session.execute(query)).scalars().all())


# --------------------------------------------------------------------------- batches


async def add_batch(session: AsyncSession, *, batch: Batch) -> None:
    session.add(batch)
    await session.flush()


async def get_batch(session: AsyncSession, *, batch_id: str, user_id: str) -> Batch | None:
    batch = await session.get(Batch, batch_id)
    if batch is None or batch.user_id != user_id:
        return None
    return batch


async def list_batches(
    session: AsyncSession, *, user_id: str, limit: int, after: str | None = None
) -> Sequence[Batch]:
    query = select(Batch).where(Batch.user_id == user_id)
    if after:
        query = query.where(Batch.id < after)
    return (await session.execute(query.order_by(Batch.id.desc()).limit(limit))).scalars().all()


async def batch_counts(session: AsyncSession, *, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """``batch id → {status: count}``."""
    if not batch_ids:
        return {}
    query = (
        select(Job.batch_id, Job.status, func.count())
        .where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.status)
    )
    counts: dict[str, dict[str, int]] = {b: {} for b in batch_ids}
    for batch_id, status, count in (await session.execute(query)).all():
        counts[str(batch_id)][str(status)] = int(count)
    return counts


async def batch_jobs(session: AsyncSession, *, batch_id: str) -> Sequence[Job]:
    query = select(Job).where(Job.batch_id == batch_id).order_by(Job.id)
    return (await session.execute(query)).scalars().all()


# --------------------------------------------------------------------------- idempotency


async def get_idempotency(session: AsyncSession, *, user_id: str, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (user_id, key), populate_existing=True)


async def add_idempotency(session: AsyncSession, *, record: IdempotencyKey) -> None:
    session.add(record)
    await session.flush()


async def delete_idempotency(session: AsyncSession, *, user_id: str, key: str) -> None:
    await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    )


async def purge_idempotency(session: AsyncSession, *, before: datetime) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


def lease_until(now: datetime, lease_s: float) -> datetime:
    return now + timedelta(seconds=lease_s)
