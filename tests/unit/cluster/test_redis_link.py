"""The Redis link: trouble becomes 503 ``busy``; a connection killed by the server is retried once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.testing.servers import free_port
from inference_club.testing.tcp_proxy import TcpProxy
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    await client.aclose()


async def test_calls_reach_redis(redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        async with link.call() as r:
            await r.set("ic:test:k", b"v")
            assert await r.get("ic:test:k") == b"v"  # bytes: callers decode what they read
        assert await link.ping()
    finally:
        await link.aclose()


async def test_a_connection_killed_by_the_server_is_retried_on_a_fresh_one(
    redis_url: str, admin: aioredis.Redis
) -> None:
    link = RedisLink(redis_url, max_connections=1)
    try:
        async with link.call() as r:
            pooled = str(await r.client_id())
        assert await admin.client_kill_filter(_id=pooled) == 1
        # Like every pooled connection after a Redis restart: dead, and the first command on it fails.
        async with link.call() as r:
            assert await r.incr("ic:test:n") == 1
            fresh = await r.client_id()
        assert str(fresh) != pooled
        assert int(await admin.get("ic:test:n") or 0) == 1  # the retried command ran once
    finally:
        await link.aclose()


async def test_redis_refusing_connections_is_busy_and_ping_says_false() -> None:
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    try:
        with pytest.raises(SharedStateUnavailable) as caught:
            async with link.call() as r:
                await r.get("x")
        assert caught.value.status == 503
        assert not await link.ping()
    finally:
        await link.aclose()


async def test_a_hung_redis_fails_within_the_timeout_then_the_link_recovers(redis_url: str) -> None:
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        link = RedisLink(f"redis://{proxy.address}/{TEST_DB}", timeout_s=0.3)
        try:
            async with link.call() as r:
                await r.set("ic:test:k", b"before")
            await proxy.set_mode("blackhole")
            connections = proxy.connections
            with pytest.raises(SharedStateUnavailable):
                # The outer bound only keeps a broken timeout from hanging the suite.
                async with asyncio.timeout(10), link.call() as r:
                    await r.get("ic:test:k")
            # A timeout is not retried on a new connection: that would double the wait.
            assert proxy.connections == connections
            assert not await link.ping()
            await proxy.set_mode("pass")
            async with link.call() as r:  # nothing restarted: the pool reconnects
                assert await r.get("ic:test:k") == b"before"
        finally:
            await link.aclose()


async def test_errors_of_the_callers_own_making_pass_through_unchanged(redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        with pytest.raises(KeyError):
            async with link.call():
                raise KeyError("not Redis trouble")
    finally:
        await link.aclose()
