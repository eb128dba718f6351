"""Job and workflow-run changes told to every replica.

Each replica publishes ``{"job": id, "revision": n, "status": s}`` on ``ic:jobs`` for
every job change it makes, and ``{"run": id}`` on ``ic:runs`` for every workflow-run
change. A receiving replica that has a waiter (``?wait=N``) or an event stream on that
job reads the job from the database and hands it to its local :class:`JobSignals`; a
run's watchers are simply woken (they read the database themselves). A queued job also
wakes the local dispatcher, so any replica may claim it at once.

Nothing is trusted from the message but the id: the database stays the source of truth.
After a lost subscription comes back, every local waiter re-reads the database once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from inference_club.cluster.broadcast import Broadcast
from inference_club.domain.jobs import JobStatus
from inference_club.errors import DatabaseUnavailable
from inference_club.services.job_events import JobSignals
from inference_club.services.jobs import JobService
from inference_club.services.workflows import WorkflowSignals
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import Job

log = logging.getLogger("inference_club.signals")

JOBS_CHANNEL = "ic:jobs"
RUNS_CHANNEL = "ic:runs"


class SignalFanout:
    def __init__(
        self,
        broadcast: Broadcast,
        database: Database,
        jobs: JobService,
        job_signals: JobSignals,
        run_signals: WorkflowSignals,
    ) -> None:
        self._broadcast = broadcast
        self._db = database
        self._jobs = jobs
        self._job_signals = job_signals
        self._run_signals = run_signals
        # Job id → whether another read is due; present while a read task runs.
        self._stale: dict[str, bool] = {}
        self._reading: set[asyncio.Task[None]] = set()
        job_signals.on_change(self._job_changed)
        run_signals.on_change(self._run_changed)
        broadcast.on(JOBS_CHANNEL, self._job_received)
        broadcast.on(RUNS_CHANNEL, self._run_received)
        broadcast.on_connected(self._catch_up)

    def __repr__(self) -> str:
        return f"<SignalFanout reading={len(self._reading)}>"

    # Out ----------------------------------------------------------------------------------

    def _job_changed(self, job: Job) -> None:
        self._broadcast.publish(JOBS_CHANNEL, {"job": job.id, "revision": job.revision, "status": job.status})

    def _run_changed(self, run_id: str) -> None:
        self._broadcast.publish(RUNS_CHANNEL, {"run": run_id})

    # In -----------------------------------------------------------------------------------

    def _job_received(self, body: dict[str, Any]) -> None:
        job_id = body.get("job")
        if not isinstance(job_id, str):
            return
        if body.get("status") == JobStatus.QUEUED:
            self._jobs.wake()
        if self._job_signals.watched(job_id):
            self._refresh(job_id)

    def _run_received(self, body: dict[str, Any]) -> None:
        run_id = body.get("run")
        if isinstance(run_id, str):
            self._run_signals.wake(run_id)

    def _catch_up(self) -> None:
        for job_id in self._job_signals.watched_ids():
            self._refresh(job_id)
        self._run_signals.wake_all()

    def _refresh(self, job_id: str) -> None:
        """Read ``job_id`` for its local waiters; one read at a time per job, the last one after the last news."""
        if job_id in self._stale:
            self._stale[job_id] = True
            return
        self._stale[job_id] = True
        task = asyncio.create_task(self._read(job_id), name="job-signal-read")
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def _read(self, job_id: str) -> None:
        try:
            while self._stale.get(job_id):
                self._stale[job_id] = False
                async with self._db.read() as session:
                    job = await q.get_job(session, job_id=job_id, user_id=None)
                if job is not None:
                    self._job_signals.deliver(job)
        except DatabaseUnavailable:
            pass  # the waiters poll the database themselves
        except Exception:  # pragma: no cover - a bug must not go unnoticed in a task
            log.exception("reading job %s for its waiters failed", job_id)
        finally:
            self._stale.pop(job_id, None)

    async def stop(self) -> None:
        for task in list(self._reading):
            task.cancel()
        await asyncio.gather(*self._reading, return_exceptions=True)
