"""Progress reports from the agent to the hub over HTTP (the direct transport's channel).

``POST {hub}/api/inference/agent/progress`` with the agent's key and
``{"request_id", "progress", "stage"}``. Reports are coalesced per request (only the
latest waits to be sent) and sent by one background task, so a slow hub never holds an
engine job; failures are logged at debug level and dropped (progress is advisory).
The tunnel transport sends the same report as a ``PROGRESS`` frame instead.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from ..waiting import cancel_and_wait

__all__ = ["PROGRESS_PATH", "ProgressPoster"]

log = logging.getLogger("inference_club.agent.progress")

PROGRESS_PATH = "/api/inference/agent/progress"


class ProgressPoster:
    """Sends progress reports to the hub with the heartbeat's HTTP client."""

    def __init__(self, hub: str, key: str, client: httpx.AsyncClient) -> None:
        self.url = hub.rstrip("/") + PROGRESS_PATH
        self._key = key
        self._client = client
        self._pending: dict[str, tuple[float, str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ProgressPoster pending={len(self._pending)}>"

    def report(self, request_id: str, value: float, stage: str) -> None:
        self._pending[request_id] = (value, stage)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="agent-progress")

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                request_id, (value, stage) = next(iter(self._pending.items()))
                del self._pending[request_id]
                try:
                    response = await self._client.post(
                        self.url,
                        json={"request_id": request_id, "progress": value, "stage": stage},
                        headers={"authorization": f"Bearer {self._key}"},
                        timeout=10.0,
                    )
                    if response.status_code >= 400:
                        log.debug("the hub refused a progress report: HTTP %d", response.status_code)
                except httpx.HTTPError as exc:
                    log.debug("could not send a progress report: %r", exc)
