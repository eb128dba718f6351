"""Usage recorder: per-request rows collected in memory and written in batches.

Nothing here runs on the request path except ``record`` (an append). While the
database is unavailable the rows stay in the buffer and the next flush tries again; the
buffer is bounded and drops the oldest rows rather than grow without end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

from inference_club.domain.clock import utcnow
from inference_club.errors import DatabaseUnavailable
from inference_club.services.auth import KeyAuthenticator
from inference_club.services.token_counts import TokenCounts
from inference_club.store import accounts as accounts_q
from inference_club.store import usage as q
from inference_club.store.db import Database
from inference_club.waiting import cancel_and_wait, wait_event

log = logging.getLogger("inference_club.usage")

_MAX_BUFFER = 100_000
_MAX_BATCH = 5_000


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

    def row(self) -> dict[str, object]:
        """The column values (``dataclasses.asdict`` would deep-copy every value)."""
        return {name: getattr(self, name) for name in _USAGE_FIELDS}

    def set_tokens(self, counts: TokenCounts | None) -> None:
        """Token counts the engine reported; left ``None`` when it reported none."""
        if counts is None:
            return
        self.prompt_tokens = counts.prompt_tokens
        self.completion_tokens = counts.completion_tokens
        self.total_tokens = counts.total_tokens


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


class UsageRecorder:
    def __init__(
        self,
        database: Database,
        auth: KeyAuthenticator,
        *,
        interval_s: float,
        tokens_spent: Callable[[str, int], None] | None = None,
    ) -> None:
        self._db = database
        self._auth = auth
        # Told each key's token use as it is recorded (the tokens-per-minute limit).
        self._tokens_spent = tokens_spent
        self._interval = interval_s
        self._buffer: deque[Usage] = deque(maxlen=_MAX_BUFFER)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.written = 0
        self._writing = 0  # rows of the batch being written right now
        # One flush at a time: a flush called while another writes waits for it, so that
        # whatever was recorded before the call is in the database when it returns.
        self._flushing = asyncio.Lock()
        self.on_record: Callable[[Usage], None] | None = None
        """Sees every row as it is recorded (the metrics count calls, latency and tokens)."""

    def __repr__(self) -> str:
        return f"<UsageRecorder pending={len(self._buffer)} written={self.written}>"

    def record(self, usage: Usage) -> None:
        if usage.created_at is None:
            usage.created_at = utcnow()
        self._buffer.append(usage)
        if self._tokens_spent is not None and usage.key_id:
            tokens = usage.total_tokens or (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
            if tokens:
                self._tokens_spent(usage.key_id, tokens)
        if self.on_record is not None:
            self.on_record(usage)

    @property
    def pending(self) -> int:
        """Rows not yet written: buffered, or in a write that has not committed."""
        return len(self._buffer) + self._writing

    async def flush(self) -> int:
        """Write the rows buffered when called (after a flush already writing, if any); rows
        written (0 when the database is unavailable).

        Rows recorded while it writes wait for the next flush: under steady load, draining
        until empty would chase them with one small transaction (and one disk sync) after
        another, never leaving the loop.
        """
        async with self._flushing:
            total = 0
            due = len(self._buffer)
            while True:
                written = await self._flush_batch(min(due - total, _MAX_BATCH))
                total += written
                if written == 0 or total >= due:
                    return total

    async def _flush_batch(self, rows: int) -> int:
        batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), rows))]
        last_used = self._auth.take_last_used()
        if not batch and not last_used:
            return 0
        self._writing = len(batch)
        try:
            async with self._db.transaction() as session:
                await q.insert_usage(session, rows=[usage.row() for usage in batch])
                await accounts_q.touch_keys(session, last_used=last_used)
        except DatabaseUnavailable:
            # Kept for the next flush; the outage itself is logged once by the database.
            self._buffer.extendleft(reversed(batch))
            self._auth.give_back_last_used(last_used)
            return 0
        except Exception:
            log.exception("usage flush failed; %d rows dropped", len(batch))
            return 0
        finally:
            self._writing = 0
        self.written += len(batch)
        return len(batch)

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self._interval)
            self._wake.clear()
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        while self._buffer and await self.flush():
            pass  # rows recorded during a flush (requests still finishing) go too
        if self._buffer:
            log.warning("%d usage rows not written: the database is unavailable", len(self._buffer))
