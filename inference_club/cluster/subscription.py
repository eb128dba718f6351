"""A Redis pub/sub subscription that survives Redis restarts.

redis-py's pub/sub connection does not come back by itself after the server went away,
so this loop drops it on any error and subscribes afresh after a short pause. Each
(re)subscription calls ``on_connected``: messages published while the link was down are
lost, so the owner reloads the state it follows from Redis there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.waiting import cancel_and_wait

log = logging.getLogger("inference_club.cluster")

MessageHandler = Callable[[str, bytes], None]


class Subscription:
    def __init__(
        self,
        link: RedisLink,
        channels: Sequence[str],
        on_message: MessageHandler,
        *,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        retry_s: float = 0.5,
        name: str = "subscription",
    ) -> None:
        self._link = link
        self._channels = list(channels)
        self._on_message = on_message
        self._on_connected = on_connected
        self._retry_s = retry_s
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        state = "connected" if self.connected.is_set() else "down"
        return f"<Subscription {self._name} {state} {self._channels}>"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self.connected.clear()

    async def _run(self) -> None:
        reported = False
        while True:
            pubsub = self._link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._channels)
                if self._on_connected is not None:
                    await self._on_connected()
                self.connected.set()
                if reported:
                    log.info("%s: Redis is back; subscribed again", self._name)
                    reported = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        channel = message["channel"]
                        name = channel.decode() if isinstance(channel, bytes) else str(channel)
                        try:
                            self._on_message(name, message["data"])
                        except Exception:  # a bad message must not end the subscription
                            log.exception("%s: could not handle a message on %s", self._name, name)
            except (RedisError, OSError, SharedStateUnavailable) as exc:
                self.connected.clear()
                if not reported:
                    log.warning("%s: Redis unavailable (%s); retrying", self._name, exc)
                    reported = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._retry_s)
