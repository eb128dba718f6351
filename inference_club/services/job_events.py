"""A job's public shape and the in-process signal of its changes.

Both the job service (which answers with a job and waits on its changes) and the
dispatcher (which changes it) use these; keeping them apart lets the service hold the
dispatcher without the dispatcher importing the service back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inference_club.domain.clock import as_utc, unix
from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.jobs import inference_type
from inference_club.store.tables import Job

_SUBSCRIBER_QUEUE = 256


# --------------------------------------------------------------------------- public shapes


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((as_utc(end) - as_utc(start)).total_seconds(), 3)


def job_envelope(job: Job) -> dict[str, Any]:
    """The 202 answer of a queued job (docs/api.md, Jobs)."""
    endpoint = BY_NAME[job.endpoint]
    return {
        "id": job.id,
        "object": "inference.job",
        "status": job.status,
        "inference_type": inference_type(endpoint),
        "endpoint": endpoint.path,
        "model": job.model,
        "created": unix(job.created_at),
        "queued_at": unix(job.queued_at),
    }


def job_public(job: Job, *, with_result: bool = True) -> dict[str, Any]:
    """Job detail; lists leave out ``result`` (it can be large) but keep ``result_url``."""
    data = job_envelope(job)
    data.update(
        {
            "batch_id": job.batch_id,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "provider": job.provider_name,
            "started_at": unix(job.started_at),
            "finished_at": unix(job.finished_at),
            "result_url": job.result_url,
            "files": list(job.files or []),
            "error": job.error,
            "progress": job.progress,
            "timings": {
                "queued_s": _seconds(job.queued_at, job.started_at),
                "run_s": _seconds(job.started_at, job.finished_at),
            },
        }
    )
    if with_result:
        data["result"] = job.result
    return data


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    revision: int
    status: str
    payload: dict[str, Any]


class JobSignals:
    """In-process fan-out of job changes to whoever waits on a job."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[JobEvent]]] = {}
        self._listeners: list[Callable[[Job], None]] = []

    def on_change(self, listener: Callable[[Job], None]) -> None:
        """Call ``listener`` with every job whose state changed in this process (it must not block)."""
        self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"<JobSignals watched={len(self._subscribers)}>"

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[JobEvent]]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=_SUBSCRIBER_QUEUE)
        self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(job_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[job_id]

    def publish(self, job: Job) -> None:
        for listener in self._listeners:
            listener(job)
        self.deliver(job)

    def watched(self, job_id: str) -> bool:
        return job_id in self._subscribers

    def watchers(self, job_id: str) -> int:
        return len(self._subscribers.get(job_id, ()))

    def watched_ids(self) -> list[str]:
        return list(self._subscribers)

    def deliver(self, job: Job) -> None:
        """Hand ``job`` to this process's waiters only (a change another replica made)."""
        queues = self._subscribers.get(job.id)
        if not queues:
            return
        event = JobEvent(job.id, job.revision, job.status, job_public(job))
        for queue in queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stalled reader: its oldest state goes, the newest (maybe the last) always arrives.
                queue.get_nowait()
                queue.put_nowait(event)
