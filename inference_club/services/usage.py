"""Usage recorder: per-request rows collected in memory and written in batches.

Nothing here runs on the request path except ``record`` (an append). A bounded
buffer drops the oldest rows rather than grow without end if the database stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from inference_club.domain.clock import utcnow
from inference_club.services.auth import KeyAuthenticator
from inference_club.store import accounts as accounts_q
from inference_club.store import usage as q
from inference_club.store.db import Database

log = logging.getLogger("inference_club.usage")

_MAX_BUFFER = 100_000


@dataclass(slots=True)
class Usage:
    request_id: str
    user_id: str
    key_id: str | None
    provider_id: str | None
    endpoint: str
    model: str | None
    status_code: int
    latency_ms: float
    ttft_ms: float | None = None
    error_type: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    created_at: datetime | None = None

    def set_tokens(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, value)


class UsageRecorder:
    def __init__(self, database: Database, auth: KeyAuthenticator, *, interval_s: float) -> None:
        self._db = database
        self._auth = auth
        self._interval = interval_s
        self._buffer: deque[Usage] = deque(maxlen=_MAX_BUFFER)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.written = 0

    def __repr__(self) -> str:
        return f"<UsageRecorder pending={len(self._buffer)} written={self.written}>"

    def record(self, usage: Usage) -> None:
        if usage.created_at is None:
            usage.created_at = utcnow()
        self._buffer.append(usage)

    async def flush(self) -> int:
        rows = []
        while self._buffer:
            rows.append(asdict(self._buffer.popleft()))
        last_used = self._auth.take_last_used()
        if not rows and not last_used:
            return 0
        try:
            async with self._db.transaction() as session:
                await q.insert_usage(session, rows=rows)
                await accounts_q.touch_keys(session, last_used=last_used)
        except Exception:
            log.exception("usage flush failed; %d rows dropped", len(rows))
            return 0
        self.written += len(rows)
        return len(rows)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
