"""Engine progress on jobs: what agents report, written behind the request path.

Agents report ``(request_id, progress 0..1, stage)`` for long engine jobs, over the
tunnel (``PROGRESS`` frames) or by HTTP (``POST /api/inference/agent/progress``). A job
attempt's request id is ``{job_id}.{attempt}``; other request ids (synchronous calls)
are ignored. Reports are coalesced per job and written by one background task, so a
burst of reports costs one ``UPDATE`` per job and nothing on the agent's path; each
write bumps the job's revision and is published to the job's event subscribers.

Only the reporting key's own user's jobs, in their current attempt, can be changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from inference_club.services.job_events import JobSignals
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.waiting import cancel_and_wait

__all__ = ["ProgressBoard", "ProgressReport", "parse_request_id"]

log = logging.getLogger("inference_club.progress")

MAX_STAGE = 200


@dataclass(frozen=True, slots=True)
class ProgressReport:
    user_id: str
    job_id: str
    attempt: int
    value: float
    stage: str


def parse_request_id(request_id: str) -> tuple[str, int] | None:
    """``job_x.2`` → ("job_x", 2); None when it is not a job attempt's request id."""
    job_id, sep, attempt = request_id.rpartition(".")
    if not sep or not job_id or not attempt.isdigit():
        return None
    return job_id, int(attempt)


class ProgressBoard:
    def __init__(self, database: Database, signals: JobSignals) -> None:
        self._db = database
        self._signals = signals
        self._pending: dict[str, ProgressReport] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self.written = 0

    def __repr__(self) -> str:
        return f"<ProgressBoard pending={len(self._pending)} written={self.written}>"

    def report(self, user_id: str, request_id: str, value: float, stage: str) -> bool:
        """Queue one report; False when it names no job attempt (ignored)."""
        parsed = parse_request_id(request_id)
        if parsed is None:
            return False
        job_id, attempt = parsed
        value = min(1.0, max(0.0, float(value)))
        self._pending[job_id] = ProgressReport(user_id, job_id, attempt, value, stage[:MAX_STAGE])
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hub-progress")
        return True

    async def flush(self) -> None:
        """Write every queued report now, after any write under way (tests, shutdown)."""
        async with self._writing:
            while self._pending:
                job_id, report = next(iter(self._pending.items()))
                del self._pending[job_id]
                await self._write(report)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bad write must not end the loop
                log.exception("could not record job progress")

    async def _write(self, report: ProgressReport) -> None:
        progress = {"value": round(report.value, 4), "stage": report.stage, "updated_at": int(time.time())}
        async with self._db.transaction() as session:
            job = await q.set_progress(
                session,
                job_id=report.job_id,
                attempt=report.attempt,
                user_id=report.user_id,
                progress=progress,
            )
        if job is not None:
            self.written += 1
            self._signals.publish(job)
