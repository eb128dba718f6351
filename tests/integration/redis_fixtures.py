"""A Redis database of the cluster-event tests' own (number 12), emptied before and after."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import skip_or_fail

REDIS_DB_URL = "redis://127.0.0.1:6379/12"


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture(name="redis_url")
def redis_url_fixture() -> Iterator[str]:
    """Import this into a test module to give its tests the ``redis_url`` fixture."""
    try:
        asyncio.run(_flush(REDIS_DB_URL))
    except Exception as exc:
        skip_or_fail(f"Redis at {REDIS_DB_URL} is not reachable: {exc!r}")
    yield REDIS_DB_URL
    asyncio.run(_flush(REDIS_DB_URL))
