"""A Redis database of the test's own, emptied first; skipped (or failed in CI) without Redis."""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from tests.conftest import skip_or_fail

REDIS_HOST = os.environ.get("IC_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("IC_TEST_REDIS_PORT", "6379"))
# The database these tests flush; keep it apart from any other user of the same Redis.
TEST_DB = int(os.environ.get("IC_TEST_REDIS_DB", "11"))


async def fresh_redis_url(db: int, *, host: str = REDIS_HOST, port: int = REDIS_PORT) -> str:
    """``redis://host:port/db`` after FLUSHDB; the test fails clearly when services are required."""
    url = f"redis://{host}:{port}/{db}"
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.flushdb()
    except Exception as exc:
        skip_or_fail(f"Redis at {host}:{port} is not reachable: {exc!r}")
    finally:
        await client.aclose()
    return url
