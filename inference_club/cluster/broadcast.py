"""Small notifications between replicas over Redis pub/sub.

A notification only says *what changed* (a job, a run, a key); the database stays the
source of truth, and every receiver reads it again. Delivery is best effort: a message
published while Redis is down, or while a replica is reconnecting, is lost. So every
consumer keeps its own polling as a fallback, and each time the subscription is
(re)established the ``on_connected`` hooks run, letting consumers catch up at once.

Publishing never blocks the caller: messages go into a bounded queue that one task
sends in order. Each message carries this process's origin tag, and a replica ignores
its own messages (it acted on them locally already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable

log = logging.getLogger("inference_club.broadcast")

Handler = Callable[[dict[str, Any]], None]

_OUTBOX = 10_000
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0


class Broadcast:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.origin = secrets.token_hex(8)
        self._handlers: dict[str, Handler] = {}
        self._on_connected: list[Callable[[], None]] = []
        self._outbox: asyncio.Queue[tuple[str, bytes]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.received = 0
        self.dropped = 0

    def __repr__(self) -> str:
        state = "connected" if self.connected.is_set() else "disconnected"
        return f"<Broadcast {state} channels={sorted(self._handlers)} received={self.received}>"

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` (synchronously, it must not block) with other replicas' messages."""
        self._handlers[channel] = handler

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` each time the subscription is (re)established: messages may have been missed."""
        self._on_connected.append(hook)

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for the other replicas; dropped (with a count) when the queue is full."""
        if self._outbox is None:
            return  # not started: a single process has nobody to tell
        payload = orjson.dumps({**message, "origin": self.origin})
        try:
            self._outbox.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._outbox = asyncio.Queue(maxsize=_OUTBOX)
        self._tasks = [
            asyncio.create_task(self._listen(), name="broadcast-listen"),
            asyncio.create_task(self._send(), name="broadcast-send"),
        ]

    async def stop(self) -> None:
        if self._outbox is not None:
            # Give queued messages (a revocation, say) a moment to leave.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._drained()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._outbox = None

    async def _drained(self) -> None:
        assert self._outbox is not None
        await self._outbox.join()

    async def _send(self) -> None:
        assert self._outbox is not None
        failing = False
        while True:
            channel, payload = await self._outbox.get()
            try:
                async with self._link.call() as r:
                    await r.publish(channel, payload)
                failing = False
            except SharedStateUnavailable:
                self.dropped += 1 + self._drop_queued()  # stale by the time Redis is back
                if not failing:
                    log.warning(
                        "Redis unavailable: notifications to other replicas are dropped until it returns"
                    )
                failing = True
            finally:
                self._outbox.task_done()

    def _drop_queued(self) -> int:
        assert self._outbox is not None
        dropped = 0
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()
            dropped += 1
        return dropped

    async def _listen(self) -> None:
        delay = _RETRY_MIN_S
        lost = False
        while True:
            pubsub = self._link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._handlers)
                if lost:
                    log.info("Redis subscription re-established")
                lost = False
                self.connected.set()
                delay = _RETRY_MIN_S
                self._caught_up()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message)
            except (RedisError, OSError) as exc:
                if not lost:
                    log.warning("Redis subscription lost (%s); retrying", exc.__class__.__name__)
                lost = True
                self.connected.clear()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    def _caught_up(self) -> None:
        for hook in self._on_connected:
            try:
                hook()
            except Exception:  # pragma: no cover - a bug in one hook must not stop the others
                log.exception("broadcast reconnect hook failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            body = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            log.warning("ignored a malformed notification on %s", channel)
            return
        if not isinstance(body, dict) or body.get("origin") == self.origin:
            return
        self.received += 1
        try:
            handler(body)
        except Exception:  # pragma: no cover - a bug in one handler must not end the subscription
            log.exception("notification handler for %s failed", channel)
