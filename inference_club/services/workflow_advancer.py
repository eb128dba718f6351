"""The workflow advancer: poll → claim → run → record → reap, for runs instead of jobs.

- **event-driven**: a job of a run that changes state in this process (the dispatcher's
  record step, a cancel, the reaper) marks its run dirty at once.
- **sweep**: every ``workflow_sweep_interval_s`` every RUNNING run is marked dirty, which
  repairs whatever a crash or another hub process left for us.
- **run**: dirty runs are advanced one at a time per process (a run's lock in the
  database orders passes across processes); a pass is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from inference_club.domain.jobs import is_terminal
from inference_club.errors import DatabaseUnavailable, NotFound
from inference_club.services.job_events import JobSignals
from inference_club.services.workflow_engine import run_id_of
from inference_club.services.workflows import WorkflowService
from inference_club.settings import Settings
from inference_club.store.tables import Job
from inference_club.waiting import wait_event

log = logging.getLogger("inference_club.workflows")


class WorkflowAdvancer:
    def __init__(self, service: WorkflowService, signals: JobSignals, settings: Settings) -> None:
        self._service = service
        self._settings = settings
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_sweep = 0.0
        self.passes = 0
        signals.on_change(self._job_changed)

    def __repr__(self) -> str:
        state = "running" if self._task else "idle"
        return f"<WorkflowAdvancer {state} dirty={len(self._dirty)} passes={self.passes}>"

    def _job_changed(self, job: Job) -> None:
        if not is_terminal(job.status):
            return
        run_id = run_id_of(job.request_id)
        if run_id is not None:
            self.mark(run_id)

    def mark(self, run_id: str) -> None:
        self._dirty[run_id] = None
        self._wakeup.set()

    async def start(self) -> None:
        self._stopping = False
        self._next_sweep = 0.0
        self._task = asyncio.create_task(self._loop(), name="workflow-advancer")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self.tick()
            except DatabaseUnavailable:
                pass  # logged once per outage by the database; the next pass tries again
            except Exception:
                log.exception("workflow advancer pass failed; retrying after the sweep interval")
            timeout = max(0.0, self._next_sweep - time.monotonic())
            await wait_event(self._wakeup, timeout)

    async def tick(self) -> int:
        """Sweep if due, then advance every dirty run once. Returns runs that changed."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._settings.workflow_sweep_interval_s
            for run_id in await self._service.active_runs():
                self._dirty.setdefault(run_id, None)
        changed = 0
        while self._dirty and not self._stopping:
            run_id = next(iter(self._dirty))
            del self._dirty[run_id]
            self.passes += 1
            try:
                changed += await self._service.advance(run_id)
            except NotFound:
                continue  # deleted with its owner
            except Exception:
                log.exception("could not advance workflow run %s; the sweep will retry it", run_id)
        return changed

    async def run_burst(self) -> int:
        """Advance until nothing is dirty (tests); do not combine with :meth:`start`."""
        self._next_sweep = 0.0
        return await self.tick()
