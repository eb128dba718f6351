"""A pub/sub subscription on a real Redis that outlives Redis going away, catching up each time."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.subscription import Subscription
from inference_club.testing.tcp_proxy import TcpProxy
from tests.polling import eventually
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB


@pytest.fixture
def channels() -> tuple[str, str]:
    tag = secrets.token_hex(4)  # pub/sub is server-wide: channels of this test's own
    return f"ic:test-sub:{tag}:a", f"ic:test-sub:{tag}:b"


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[RedisLink]:
    link = RedisLink(redis_url)
    yield link
    await link.aclose()


async def test_messages_arrive_with_their_channel_name_and_raw_bytes(
    redis_url: str, channels: tuple[str, str], publisher: RedisLink
) -> None:
    got: list[tuple[str, bytes]] = []
    link = RedisLink(redis_url)
    subscription = Subscription(link, channels, lambda name, data: got.append((name, data)))
    subscription.start()
    subscription.start()  # a second start runs no second loop
    try:
        async with asyncio.timeout(10):
            await subscription.connected.wait()
        async with publisher.call() as r:
            await r.publish(channels[1], b"\x00one")
            await r.publish(channels[0], b"two")
            await r.publish("ic:test-sub:not-ours", b"three")
        await eventually(lambda: len(got) >= 2, what="two messages")
        await asyncio.sleep(0)
        assert got == [(channels[1], b"\x00one"), (channels[0], b"two")]
    finally:
        await subscription.stop()
        await link.aclose()
    assert not subscription.connected.is_set()


async def test_a_handler_error_does_not_end_the_subscription(
    redis_url: str, channels: tuple[str, str], publisher: RedisLink
) -> None:
    got: list[bytes] = []

    def handle(_name: str, data: bytes) -> None:
        if data == b"bad":
            raise ValueError("cannot read this")
        got.append(data)

    link = RedisLink(redis_url)
    subscription = Subscription(link, channels[:1], handle)
    subscription.start()
    try:
        async with asyncio.timeout(10):
            await subscription.connected.wait()
        async with publisher.call() as r:
            await r.publish(channels[0], b"bad")
            await r.publish(channels[0], b"good")
        await eventually(lambda: got == [b"good"], what="the message after the bad one")
    finally:
        await subscription.stop()
        await link.aclose()


async def test_after_redis_comes_back_it_subscribes_again_and_catches_up_first(
    channels: tuple[str, str], publisher: RedisLink
) -> None:
    got: list[bytes] = []
    catch_ups: list[bool] = []
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        link = RedisLink(f"redis://{proxy.address}/{TEST_DB}", timeout_s=0.5)
        subscription: Subscription

        async def catch_up() -> None:
            catch_ups.append(subscription.connected.is_set())  # before it reports connected

        subscription = Subscription(
            link, channels[:1], lambda _n, data: got.append(data), on_connected=catch_up, retry_s=0.05
        )
        subscription.start()
        try:
            async with asyncio.timeout(10):
                await subscription.connected.wait()
            assert catch_ups == [False]
            await proxy.set_mode("refuse")
            await eventually(lambda: not subscription.connected.is_set(), what="the loss noticed")
            await proxy.set_mode("pass")
            async with asyncio.timeout(10):
                await subscription.connected.wait()
            assert catch_ups == [False, False]
            async with publisher.call() as r:
                await r.publish(channels[0], b"after")
            await eventually(lambda: got == [b"after"], what="a message on the new subscription")
        finally:
            await subscription.stop()
            await link.aclose()


async def test_a_failing_catch_up_is_retried_until_it_succeeds(
    redis_url: str, channels: tuple[str, str], publisher: RedisLink
) -> None:
    attempts = 0

    async def catch_up() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            async with publisher.call():
                raise ConnectionError("Redis went away while reloading")

    link = RedisLink(redis_url)
    subscription = Subscription(link, channels[:1], lambda _n, _d: None, on_connected=catch_up, retry_s=0.01)
    subscription.start()
    try:
        async with asyncio.timeout(10):
            await subscription.connected.wait()
        assert attempts == 3
    finally:
        await subscription.stop()
        await link.aclose()
