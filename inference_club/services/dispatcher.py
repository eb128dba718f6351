"""The job dispatcher: poll → claim → run → record → reap, one loop per hub process.

- **poll**: on a timer and whenever something may have changed (a job was queued, a
  capacity slot freed, a provider came online), read the due queued jobs, each user's
  oldest first, users interleaved (:func:`~inference_club.domain.jobs.fair_order`).
- **claim**: only a job whose provider has a free capacity slot right now. Slots are
  shared with synchronous requests, which always go first: a job never takes a slot a
  request waits for. The claim is a conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), so hub processes sharing a database never run a job twice.
- **run** under a bounded number of tasks, through the executors synchronous calls use.
  A claim is a lease, renewed while the job runs.
- **record** the result, or retry transient failures with backoff, or fail.
- **reap** expired leases (a dead hub process's jobs) back into the queue.

Cancelling a running job cancels its task, which closes the upstream request, which
aborts it on the provider. On shutdown the dispatcher drains: running jobs get
``job_drain_timeout_s`` to finish and are then handed back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.endpoints import BY_NAME, Endpoint
from inference_club.domain.jobs import (
    IDEMPOTENCY_TTL_S,
    FailureKind,
    JobStatus,
    QueuedRef,
    RetryPolicy,
    classify_status,
    fair_order,
)
from inference_club.domain.routing import Candidate, SlotKey
from inference_club.errors import (
    AnswerTooLarge,
    DatabaseUnavailable,
    HubError,
    NoProvider,
    SharedStateUnavailable,
)
from inference_club.services.auth import Principal
from inference_club.services.bodies import JsonBody
from inference_club.services.executors import Call, Executors, Outcome
from inference_club.services.files import FileService
from inference_club.services.job_events import JobSignals
from inference_club.services.router import NoFreeSlot, Router
from inference_club.settings import Settings
from inference_club.store import accounts as accounts_q
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import Job
from inference_club.waiting import cancel_and_wait, wait_event

log = logging.getLogger("inference_club.dispatcher")


def _with_key(principal: Principal, key_id: str | None) -> Principal:
    """The job's owner as the key that submitted it (usage is recorded against it)."""
    return Principal(
        principal.user_id, principal.username, key_id or "", principal.is_admin, principal.routing_preference
    )


_PER_USER_WINDOW = 64  # queued jobs looked at per user and tick
_WINDOW = 1024  # queued jobs looked at per tick
_PRINCIPAL_TTL_S = 5.0
_PURGE_INTERVAL_S = 3600.0


@dataclass(slots=True)
class _Running:
    job: Job
    task: asyncio.Task[None]
    abandoned: bool = False  # canceled by its owner or taken over: leave the row alone


@dataclass(slots=True)
class DispatcherStats:
    claimed: int = 0
    processed: int = 0
    failed: int = 0
    retried: int = 0
    handed_back: int = 0
    reaped: int = 0
    ticks: int = 0

    @property
    def finished(self) -> int:
        return self.processed + self.failed


@dataclass(slots=True)
class _User:
    principal: Principal
    expires: float


@dataclass(slots=True)
class _Tick:
    """What one pass over the queue found."""

    started: int = 0
    waiting_for_slot: bool = False
    full: set[frozenset[SlotKey]] = field(default_factory=set)


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        router: Router,
        executors: Executors,
        files: FileService,
        signals: JobSignals,
    ) -> None:
        self._settings = settings
        self._db = database
        self._router = router
        self._executors = executors
        self._files = files
        self._signals = signals
        self.owner = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.policy = RetryPolicy(
            max_attempts=settings.job_max_attempts,
            base_s=settings.job_retry_base_s,
            cap_s=settings.job_retry_max_s,
        )
        self.stats = DispatcherStats()
        self.last_tick: float | None = None
        self._running: dict[str, _Running] = {}
        self._users: dict[str, _User] = {}
        self._last_served: dict[str, int] = {}
        self._served = 0
        self._waiting_for_slot = False
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._next_reap = 0.0
        self._next_purge = 0.0
        router.capacity.on_release(self._slot_freed)
        router.registry.on_change(lambda _provider: self.wake())

    def __repr__(self) -> str:
        state = "stopping" if self._stopping else ("running" if self._loop_task else "idle")
        return (
            f"<Dispatcher {self.owner} {state} running={len(self._running)}/{self._settings.job_concurrency} "
            f"claimed={self.stats.claimed} processed={self.stats.processed} failed={self.stats.failed} "
            f"retried={self.stats.retried}>"
        )

    # Life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._loop_task = asyncio.create_task(self._loop(), name="job-dispatcher")
        self._lease_task = asyncio.create_task(self._renew_leases(), name="job-leases")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for a while, hand the rest back."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._settings.job_drain_timeout_s)
        for running in list(self._running.values()):
            running.task.cancel()
        remaining = [r.task for r in self._running.values()]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
        if self._lease_task is not None:
            await cancel_and_wait(self._lease_task)
            self._lease_task = None

    def wake(self) -> None:
        self._wakeup.set()

    def _slot_freed(self, _key: SlotKey) -> None:
        # A free slot only matters when queued jobs were held back for want of one.
        if self._waiting_for_slot:
            self._wakeup.set()

    def pulse(self) -> dict[str, Any]:
        """For the queue summary: is this process's dispatcher alive and busy?"""
        now = time.time()
        alive = (
            self._loop_task is not None
            and not self._loop_task.done()
            and self.last_tick is not None
            and now - self.last_tick < max(5.0, 3 * self._settings.job_poll_interval_s)
        )
        return {
            "alive": alive,
            "owner": self.owner,
            "last_tick": None if self.last_tick is None else round(self.last_tick, 3),
            "running": len(self._running),
            "concurrency": self._settings.job_concurrency,
            "claimed": self.stats.claimed,
            "processed": self.stats.processed,
            "failed": self.stats.failed,
            "retried": self.stats.retried,
        }

    def abort(self, job_ids: Sequence[str]) -> None:
        """Stop running these jobs here (their rows were changed by someone else)."""
        for job_id in job_ids:
            running = self._running.get(job_id)
            if running is not None and not running.task.done():
                running.abandoned = True
                running.task.cancel()

    # The loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self.tick()
            except DatabaseUnavailable:
                pass  # logged once per outage by the database; the next pass tries again
            except Exception:
                log.exception("dispatcher pass failed; retrying after the poll interval")
            await wait_event(self._wakeup, self._settings.job_poll_interval_s)

    async def run_burst(self, *, timeout_s: float = 60.0) -> int:
        """Run queued jobs until none is due or startable, then return how many ended.

        For tests and one-off runs; do not combine with :meth:`start`.
        """
        before = self.stats.finished
        deadline = time.monotonic() + timeout_s
        while True:
            started = await self.tick()
            tasks = [r.task for r in self._running.values()]
            if tasks:
                await asyncio.wait(
                    tasks, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
                )
            elif started == 0:
                return self.stats.finished - before
            if time.monotonic() > deadline:
                raise TimeoutError(f"burst did not finish within {timeout_s}s: {self!r}")

    async def tick(self) -> int:
        """One pass: reap, notice lost jobs, start what can start. Returns jobs started."""
        self.last_tick = time.time()
        self.stats.ticks += 1
        now = utcnow()
        if time.monotonic() >= self._next_reap:
            self._next_reap = time.monotonic() + max(0.2, min(self._settings.job_lease_s / 3, 5.0))
            await self._reap(now)
        if self._running:
            await self._drop_lost()
        if self._stopping:
            return 0
        free = self._settings.job_concurrency - len(self._running)
        if free <= 0:
            return 0
        async with self._db.read() as session:
            refs = await q.claimable(session, now=now, per_user=_PER_USER_WINDOW, limit=_WINDOW)
        tick = _Tick()
        for ref in fair_order(refs, self._last_served):
            if tick.started >= free or self._stopping:
                break
            await self._consider(ref, now, tick)
        self._waiting_for_slot = tick.waiting_for_slot
        return tick.started

    async def _consider(self, ref: QueuedRef, now: datetime, tick: _Tick) -> None:
        endpoint = BY_NAME.get(ref.endpoint)
        principal = await self._principal(ref.user_id)
        if endpoint is None or principal is None:
            await self._fail_queued(
                ref.id, now, "invalid_request", "The job's endpoint or owner no longer exists."
            )
            return
        found = self._router.candidates(principal, endpoint, ref.model)
        if not found:
            queued_at = as_utc(ref.queued_at or now)
            if now - queued_at >= timedelta(seconds=self._settings.job_queue_timeout_s):
                await self._fail_queued(
                    ref.id,
                    now,
                    "no_provider",
                    f"No online provider served model {ref.model!r} ({endpoint.service_type.value}) "
                    f"within the queue timeout of {self._settings.job_queue_timeout_s:g}s.",
                )
            return
        keys = frozenset(c.slot_key for c in found)
        if keys in tick.full or not self._has_free_slot(found):
            tick.full.add(keys)
            tick.waiting_for_slot = True
            return
        claimed_at = utcnow()
        async with self._db.transaction() as session:
            claimed = await q.claim(
                session,
                job_ids=[ref.id],
                owner=self.owner,
                now=claimed_at,
                lease_until=claimed_at + timedelta(seconds=self._settings.job_lease_s),
            )
        if not claimed:
            return  # another hub process took it, or it was canceled meanwhile
        job = claimed[0]
        principal = _with_key(principal, job.key_id)
        self.stats.claimed += 1
        self._served += 1
        self._last_served[job.user_id] = self._served
        self._signals.publish(job)
        task = asyncio.create_task(self._run(job, principal, endpoint), name=f"job-{job.id}")
        self._running[job.id] = _Running(job, task)
        tick.started += 1
        # Let the task take its capacity slot before the next job looks for one.
        await asyncio.sleep(0)

    def _has_free_slot(self, found: Sequence[Candidate]) -> bool:
        capacity = self._router.capacity
        limits = capacity.snapshot()
        for candidate in found:
            key = candidate.slot_key
            in_use, limit = limits.get(key, (capacity.load(key), 1))
            if in_use < limit:
                return True
        return False

    async def _principal(self, user_id: str) -> Principal | None:
        cached = self._users.get(user_id)
        if cached is None or cached.expires < time.monotonic():
            async with self._db.read() as session:
                user = await accounts_q.get_user(session, user_id=user_id)
            if user is None:
                self._users.pop(user_id, None)
                return None
            principal = Principal(
                user_id=user.id,
                username=user.username,
                key_id="",
                is_admin=user.is_admin,
                routing_preference=user.routing_preference,
            )
            cached = _User(principal, time.monotonic() + _PRINCIPAL_TTL_S)
            self._users[user_id] = cached
        return cached.principal

    # Running one job ---------------------------------------------------------------------

    async def _run(self, job: Job, principal: Principal, endpoint: Endpoint) -> None:
        attempt = job.attempts
        call = Call(
            principal=principal,
            endpoint=endpoint,
            model=job.model,
            body=JsonBody(orjson.dumps(job.body), dict(job.body)),
            request_id=f"{job.id}.{attempt}",
            base_url=job.base_url,
        )
        try:
            await self._attempt(job, attempt, call)
        except asyncio.CancelledError:
            pass  # canceled while recording: the row already says what happened
        except Exception:
            log.exception("could not record the end of job %s; its lease will expire", job.id)
        finally:
            self._running.pop(job.id, None)
            self.wake()

    async def _attempt(self, job: Job, attempt: int, call: Call) -> None:
        try:
            outcome = await self._executors.for_endpoint(call.endpoint).collect(call, background=True)
        except (NoFreeSlot, NoProvider, SharedStateUnavailable):
            # Nothing ran: a synchronous request took the slot first, the provider just
            # went away, or Redis (shared slots) is down. The job waits in the queue; this
            # was not an attempt.
            await self._hand_back(job, attempt)
        except asyncio.CancelledError:
            # Handled here: the upstream request is closed; what is left is bookkeeping.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            running = self._running.get(job.id)
            if running is None or not running.abandoned:
                await self._hand_back(job, attempt)  # shutting down
        except AnswerTooLarge as exc:
            # The same engine would send the same oversized answer again.
            await self._failed(job, attempt, exc.message, exc.type, exc.status_code, permanent=True)
        except HubError as exc:
            await self._failed(job, attempt, exc.message, exc.type, exc.status_code)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._failed(job, attempt, f"Internal error: {exc!r}", "server_error", None)
        else:
            await self._record(job, attempt, outcome)

    async def _record(self, job: Job, attempt: int, outcome: Outcome) -> None:
        files: list[dict[str, Any]] = [
            {
                "id": f.id,
                "url": self._files.media_url(job.base_url, f.id),
                "content_type": f.content_type,
                "bytes": f.bytes,
            }
            for f in outcome.files
        ]
        provider = self._router.registry.get(outcome.provider_id)
        async with self._db.transaction() as session:
            done = await q.finish(
                session,
                job_id=job.id,
                owner=self.owner,
                attempt=attempt,
                status=JobStatus.PROCESSED,
                now=utcnow(),
                result=outcome.result,
                result_url=files[0]["url"] if files else None,
                files=files,
                provider_id=outcome.provider_id,
                provider_name=provider.name if provider else None,
            )
        if done is None:
            # Canceled or taken over while the answer came in: drop this copy.
            for stored in outcome.files:
                with contextlib.suppress(Exception):
                    await self._files.delete(stored.id, user_id=job.user_id)
            return
        self.stats.processed += 1
        self._signals.publish(done)

    async def _failed(
        self,
        job: Job,
        attempt: int,
        message: str,
        error_type: str,
        status_code: int | None,
        *,
        permanent: bool = False,
    ) -> None:
        kind = FailureKind.PERMANENT if permanent else classify_status(status_code)
        error = {"message": message, "type": error_type, "attempt": attempt, "status": status_code}
        now = utcnow()
        async with self._db.transaction() as session:
            if self.policy.should_retry(kind, attempt):
                delay = self.policy.delay_s(attempt)
                changed = await q.requeue(
                    session,
                    job_id=job.id,
                    owner=self.owner,
                    attempt=attempt,
                    run_after=now + timedelta(seconds=delay),
                    error=error,
                )
                counter = "retried"
            else:
                changed = await q.finish(
                    session,
                    job_id=job.id,
                    owner=self.owner,
                    attempt=attempt,
                    status=JobStatus.FAILED,
                    now=now,
                    error=error,
                )
                counter = "failed"
        if changed is not None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            if kind is FailureKind.PERMANENT:
                log.info("job %s failed: %s", job.id, message)
            self._signals.publish(changed)

    async def _hand_back(self, job: Job, attempt: int) -> None:
        try:
            async with self._db.transaction() as session:
                changed = await q.unclaim(session, job_id=job.id, owner=self.owner, attempt=attempt)
        except Exception:
            log.exception("could not hand job %s back; its lease will expire", job.id)
            return
        if changed is not None:
            self.stats.handed_back += 1
            self._signals.publish(changed)

    async def _fail_queued(self, job_id: str, now: datetime, error_type: str, message: str) -> None:
        async with self._db.transaction() as session:
            changed = await q.fail_queued(
                session,
                job_id=job_id,
                now=now,
                error={"message": message, "type": error_type, "attempt": 0},
            )
        if changed is not None:
            self.stats.failed += 1
            self._signals.publish(changed)

    # Leases ----------------------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        interval = max(0.1, self._settings.job_lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            if not self._running:
                continue
            until = utcnow() + timedelta(seconds=self._settings.job_lease_s)
            try:
                async with self._db.transaction() as session:
                    await q.renew(session, job_ids=list(self._running), owner=self.owner, lease_until=until)
            except DatabaseUnavailable:
                pass  # logged once per outage by the database; renewed on the next turn
            except Exception:
                log.exception("could not renew job leases")

    async def _drop_lost(self) -> None:
        """Abort jobs canceled through another hub process or taken over after a stall."""
        async with self._db.read() as session:
            lost = await q.lost(session, job_ids=list(self._running), owner=self.owner)
        if lost:
            self.abort(lost)

    async def _reap(self, now: datetime) -> None:
        async with self._db.transaction() as session:
            reaped = await q.reap(session, now=now)
        for job in reaped:
            self.stats.reaped += 1
            log.warning("job %s lost its lease; now %s (attempt %s)", job.id, job.status, job.attempts)
            self._signals.publish(job)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + _PURGE_INTERVAL_S
            async with self._db.transaction() as session:
                await q.purge_idempotency(session, before=now - timedelta(seconds=IDEMPOTENCY_TTL_S))
