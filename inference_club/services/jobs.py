"""Async jobs: submit, read, wait, watch, cancel, retry; ``Idempotency-Key``.

A job is a row committed before 202 is answered; the :class:`~.dispatcher.Dispatcher`
runs it through the same executors as a synchronous call. Changes of state are
published in process (:class:`~.job_events.JobSignals`) so waiters and event streams react at
once; with Redis, other replicas are told too (:mod:`inference_club.cluster.signals`).
Waiters also poll the database, so a job run by another hub process is seen anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.endpoints import Endpoint
from inference_club.domain.ids import new_id
from inference_club.domain.jobs import (
    ACTIVE,
    IDEMPOTENCY_TTL_S,
    JobStatus,
    is_terminal,
    request_fingerprint,
)
from inference_club.errors import Conflict, InvalidRequest, NotFound
from inference_club.services.auth import Principal
from inference_club.services.job_events import JobSignals, job_public
from inference_club.settings import Settings
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import IdempotencyKey, Job
from inference_club.waiting import cancel_and_wait

if TYPE_CHECKING:
    from inference_club.services.dispatcher import Dispatcher

log = logging.getLogger("inference_club.jobs")

_POLL_S = 1.0  # how often waiters look at the database for changes made elsewhere
_KEEPALIVE_S = 15.0
_MAX_KEY_LENGTH = 255
_POLL_BATCH = 500  # job ids per revision query


class RevisionPoller:
    """Finds changes other hub processes made to watched jobs: one query per tick for all.

    Each event-stream watcher used to poll the database itself every second, so idle
    watchers cost a query each per second. Here one task polls the revisions of every
    watched job together and hands a changed job to all of its watchers at once.
    """

    def __init__(self, database: Database, signals: JobSignals, *, interval_s: float = _POLL_S) -> None:
        self._db = database
        self._signals = signals
        self._interval = interval_s
        self._seen: dict[str, int] = {}  # job id -> revision its watchers here already have
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RevisionPoller watched={len(self._seen)}>"

    def watch(self, job_id: str, revision: int) -> None:
        """A watcher holds ``revision`` of ``job_id``; changes past it will be delivered."""
        self._seen[job_id] = min(revision, self._seen.get(job_id, revision))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-revision-poller")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            watched = set(self._signals.watched_ids())
            for job_id in [j for j in self._seen if j not in watched]:
                del self._seen[job_id]
            if not self._seen:
                return
            try:
                await self.poll()
            except Exception:  # a database outage: the next tick tries again
                log.debug("job revision poll failed", exc_info=True)

    async def poll(self) -> None:
        ids = list(self._seen)
        for start in range(0, len(ids), _POLL_BATCH):
            async with self._db.read() as session:
                found = await q.revisions(session, job_ids=ids[start : start + _POLL_BATCH])
                changed = [j for j, (_, revision) in found.items() if revision > self._seen.get(j, revision)]
                jobs = [await q.get_job(session, job_id=j, user_id=None) for j in changed]
            for job in jobs:
                if job is not None and job.id in self._seen:
                    self._seen[job.id] = job.revision
                    self._signals.deliver(job)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None


# --------------------------------------------------------------------------- the service


class KeyInUse(Exception):
    """A concurrent request committed the same ``Idempotency-Key`` first."""


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > _MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1-{_MAX_KEY_LENGTH} printable characters.", param="Idempotency-Key"
        )
    return key


class JobService:
    def __init__(
        self, database: Database, settings: Settings, signals: JobSignals, dispatcher: Dispatcher
    ) -> None:
        self._db = database
        self._settings = settings
        self.signals = signals
        self._dispatcher = dispatcher
        self.poller = RevisionPoller(database, signals)

    def __repr__(self) -> str:
        return f"<JobService {self._dispatcher!r}>"

    def wake(self) -> None:
        """Tell the dispatcher that jobs were queued."""
        self._dispatcher.wake()

    def build(
        self,
        principal: Principal,
        endpoint: Endpoint,
        model: str,
        body: dict[str, Any],
        *,
        base_url: str,
        request_id: str,
        batch_id: str | None = None,
        now: datetime | None = None,
    ) -> Job:
        """A new QUEUED job row (not yet added to a session)."""
        now = now or utcnow()
        clean = {k: v for k, v in body.items() if k != "async"}
        return Job(
            id=new_id("job"),
            user_id=principal.user_id,
            key_id=principal.key_id or None,
            batch_id=batch_id,
            endpoint=endpoint.name,
            model=model,
            body=clean,
            status=JobStatus.QUEUED,
            attempts=0,
            max_attempts=self._settings.job_max_attempts,
            revision=0,
            request_id=request_id[:64],
            base_url=base_url,
            files=[],
            created_at=now,
            queued_at=now,
            run_after=now,
        )

    async def submit(
        self,
        principal: Principal,
        endpoint: Endpoint,
        model: str,
        body: dict[str, Any],
        *,
        base_url: str,
        request_id: str,
        idempotency_key: str | None = None,
        check: Callable[[], object] | None = None,
    ) -> tuple[Job, bool]:
        """Queue a validated call; returns the job and whether it was an idempotent replay.

        ``check`` runs unless the call replays an earlier one (a replay answers the
        same job even when, say, its provider has gone offline since).
        """
        clean = {k: v for k, v in body.items() if k != "async"}
        key = check_idempotency_key(idempotency_key)
        fingerprint = request_fingerprint("job", {"endpoint": endpoint.name, "body": clean})
        if key is not None:
            existing = await self.replay(principal.user_id, key, "job", fingerprint)
            if existing is not None:
                return await self.get(principal.user_id, existing), True
        if check is not None:
            check()
        job = self.build(principal, endpoint, model, clean, base_url=base_url, request_id=request_id)
        try:
            async with self._db.transaction() as session:
                if key is not None:
                    await self.claim_key(session, principal.user_id, key, "job", fingerprint, job.id)
                await q.add_jobs(session, jobs=[job])
        except (IntegrityError, KeyInUse):
            # The same key was used by a concurrent request that committed first.
            existing = await self.replay(principal.user_id, key or "", "job", fingerprint) if key else None
            if existing is None:
                raise
            return await self.get(principal.user_id, existing), True
        self.signals.publish(job)
        self._dispatcher.wake()
        return job, False

    # Idempotency ---------------------------------------------------------------------------

    async def replay(self, user_id: str, key: str, kind: str, fingerprint: str) -> str | None:
        """The object a live key already names, or ``None``; 409 when the request differs."""
        async with self._db.read() as session:
            record = await q.get_idempotency(session, user_id=user_id, key=key)
        if record is None or _expired(record):
            return None
        if record.kind != kind or record.fingerprint != fingerprint:
            raise Conflict(
                "This Idempotency-Key was already used with a different request.", param="Idempotency-Key"
            )
        return record.object_id

    async def claim_key(
        self, session: AsyncSession, user_id: str, key: str, kind: str, fingerprint: str, object_id: str
    ) -> None:
        """Record the key in the submitting transaction (an expired record is replaced)."""
        record = await q.get_idempotency(session, user_id=user_id, key=key)
        if record is not None:
            if not _expired(record):
                raise KeyInUse(key)
            await q.delete_idempotency(session, user_id=user_id, key=key)
        await q.add_idempotency(
            session,
            record=IdempotencyKey(
                user_id=user_id,
                key=key,
                kind=kind,
                fingerprint=fingerprint,
                object_id=object_id,
                created_at=utcnow(),
            ),
        )

    # Reading -------------------------------------------------------------------------------

    async def get(self, user_id: str, job_id: str, *, wait_s: float = 0.0) -> Job:
        """The job; with ``wait_s`` it returns as soon as the job ends, or after ``wait_s``."""
        deadline = time.monotonic() + wait_s
        with self.signals.subscribe(job_id) as events:
            while True:
                async with self._db.read() as session:
                    job = await q.get_job(session, job_id=job_id, user_id=user_id)
                if job is None:
                    raise NotFound(f"No job with id {job_id!r}.", param="job_id")
                remaining = deadline - time.monotonic()
                if is_terminal(job.status) or remaining <= 0:
                    return job
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, _POLL_S)):
                        await events.get()

    async def list_jobs(
        self,
        user_id: str,
        *,
        statuses: Sequence[str] = (),
        active: bool = False,
        batch_id: str | None = None,
        limit: int,
        after: str | None = None,
    ) -> list[Job]:
        wanted = list(statuses)
        unknown = [s for s in wanted if s not in JobStatus.__members__]
        if unknown:
            raise InvalidRequest(
                f"Unknown status {unknown[0]!r}; one of {', '.join(JobStatus)}.", param="status"
            )
        if active:
            wanted = [s for s in (wanted or list(ACTIVE)) if s in ACTIVE]
            if not wanted:
                return []
        async with self._db.read() as session:
            return list(
                await q.list_jobs(
                    session, user_id=user_id, statuses=wanted, batch_id=batch_id, limit=limit, after=after
                )
            )

    async def events(self, user_id: str, job_id: str) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Job detail at every change of state, in order, ending after a terminal one.

        ``None`` items are keep-alive ticks. Subscribing before the first read means
        nothing that happens in this process is missed; changes made by another hub
        process are found by polling (states it passed through quickly may be merged).
        """
        with self.signals.subscribe(job_id) as events:
            async with self._db.read() as session:
                job = await q.get_job(session, job_id=job_id, user_id=user_id)
            if job is None:
                raise NotFound(f"No job with id {job_id!r}.", param="job_id")
            revision, status, first = job.revision, job.status, job_public(job)
            del job  # an open stream holds no ORM object
            yield first
            if is_terminal(status):
                return
            del first
            self.poller.watch(job_id, revision)
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_S):  # no helper task per wait
                        event = await events.get()
                except TimeoutError:
                    yield None
                    continue
                if event.revision <= revision:
                    continue
                revision = event.revision
                yield event.payload
                if is_terminal(event.status):
                    return

    # Changing ------------------------------------------------------------------------------

    async def cancel(self, user_id: str, job_id: str) -> Job:
        job = await self.get(user_id, job_id)
        if job.status not in ACTIVE:
            raise Conflict(f"Job {job_id} is {job.status}; only QUEUED or PROCESSING jobs can be canceled.")
        async with self._db.transaction() as session:
            changed = await q.cancel(session, job_ids=[job_id], now=utcnow())
        if not changed:
            job = await self.get(user_id, job_id)
            raise Conflict(f"Job {job_id} is {job.status}; only QUEUED or PROCESSING jobs can be canceled.")
        self._dispatcher.abort([job_id])
        self.signals.publish(changed[0])
        return changed[0]

    async def cancel_many(self, job_ids: Sequence[str]) -> list[Job]:
        async with self._db.transaction() as session:
            changed = await q.cancel(session, job_ids=job_ids, now=utcnow())
        self._dispatcher.abort([j.id for j in changed])
        for job in changed:
            self.signals.publish(job)
        return changed

    def canceled(self, jobs: Sequence[Job]) -> None:
        """Jobs canceled in someone else's transaction: abort them here and tell watchers."""
        self._dispatcher.abort([j.id for j in jobs])
        for job in jobs:
            self.signals.publish(job)

    async def retry(self, user_id: str, job_id: str) -> Job:
        job = await self.get(user_id, job_id)
        async with self._db.transaction() as session:
            retried = await q.retry(session, job_id=job_id, now=utcnow())
        if retried is None:
            raise Conflict(f"Job {job_id} is {job.status}; only FAILED or CANCELED jobs can be retried.")
        self.signals.publish(retried)
        self._dispatcher.wake()
        return retried

    # The dashboard's view --------------------------------------------------------------------

    async def summary(self, user_id: str | None) -> dict[str, Any]:
        """Counts by status, active work, oldest queued job and the dispatcher's pulse.

        ``user_id=None`` summarises the whole hub (administrators).
        """
        async with self._db.read() as session:
            counts = await q.status_counts(session, user_id=user_id)
            oldest = await q.oldest_queued_at(session, user_id=user_id)
        by_status = {status.value: counts.get(status.value, 0) for status in JobStatus}
        age = None if oldest is None else round((utcnow() - as_utc(oldest)).total_seconds(), 3)
        return {
            "object": "inference.queue.summary",
            "scope": "hub" if user_id is None else "user",
            "counts": by_status,
            "active": by_status[JobStatus.QUEUED] + by_status[JobStatus.PROCESSING],
            "oldest_queued_age_s": age,
            "dispatcher": self._dispatcher.pulse(),
        }


def _expired(record: IdempotencyKey) -> bool:
    return as_utc(record.created_at) < utcnow() - timedelta(seconds=IDEMPOTENCY_TTL_S)
