"""One pooled HTTP client made of several small connection pools.

httpcore's pool re-examines every one of its connections (a ``poll()`` per idle
connection) each time a request starts or ends, so its cost per request grows with the
pool. Spreading requests round-robin over a few small pools keeps that cost flat at
high concurrency. Used by the hub (to reach agents) and by the agent (to reach engines).
"""

from __future__ import annotations

import itertools
import math

import httpx

DEFAULT_SHARDS = 8


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, limits: httpx.Limits, shards: int = DEFAULT_SHARDS) -> None:
        def share(total: int | None) -> int | None:
            return None if total is None else max(1, math.ceil(total / shards))

        shard_limits = httpx.Limits(
            max_connections=share(limits.max_connections),
            max_keepalive_connections=share(limits.max_keepalive_connections),
            keepalive_expiry=limits.keepalive_expiry,
        )
        self._shards = [httpx.AsyncHTTPTransport(limits=shard_limits) for _ in range(shards)]
        self._order = itertools.cycle(self._shards)

    def __repr__(self) -> str:
        return f"<ShardedTransport shards={len(self._shards)}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._order).handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def pooled_client(*, timeout: httpx.Timeout, limits: httpx.Limits, shards: int = DEFAULT_SHARDS) -> httpx.AsyncClient:
    """The process's client: no proxies from the environment, no redirects."""
    return httpx.AsyncClient(
        timeout=timeout,
        transport=ShardedTransport(limits=limits, shards=shards),
        follow_redirects=False,
        trust_env=False,
    )
