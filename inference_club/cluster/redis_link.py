"""The hub's one Redis connection pool, and the rule for Redis failures.

Every call goes through :meth:`RedisLink.call`, which turns a connection error or a slow
answer into :class:`~inference_club.errors.SharedStateUnavailable` (503 ``busy``), so a
request that needs Redis fails fast while Redis is down and works again as soon as it is
back: the pool reconnects by itself, nothing is restarted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from inference_club.errors import SharedStateUnavailable


class RedisLink:
    def __init__(self, url: str, *, timeout_s: float = 1.0, max_connections: int = 200) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            health_check_interval=10,
            decode_responses=False,
            # After Redis restarts, every pooled connection is dead and fails its first
            # command: try once more on a fresh one. Not on timeouts (a hung Redis must
            # still fail within timeout_s; redis-py's default would retry those too).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )

    def __repr__(self) -> str:
        return f"<RedisLink {self.client.connection_pool!r}>"

    @asynccontextmanager
    async def call(self) -> AsyncIterator[aioredis.Redis]:
        """``async with link.call() as r: await r.get(...)``; Redis trouble → 503 ``busy``."""
        try:
            yield self.client
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable() from exc

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self.client.aclose()
