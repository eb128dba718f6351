"""Notifications between replicas over a real Redis: delivered to the others, never echoed
back to the sender, malformed ones ignored; dropped (counted) while Redis is away, and the
subscription comes back by itself, running the catch-up hooks."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from inference_club.cluster import broadcast as broadcast_module
from inference_club.cluster.broadcast import Broadcast
from inference_club.cluster.redis_link import RedisLink
from inference_club.testing.tcp_proxy import TcpProxy
from tests.polling import eventually
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB

# Pub/sub is server-wide: a channel of this run's own.
CHANNEL = f"ic:test-broadcast:{secrets.token_hex(4)}"


async def test_delivered_to_others_not_to_self(redis_url: str) -> None:
    links = [RedisLink(redis_url), RedisLink(redis_url)]
    sender, receiver = Broadcast(links[0]), Broadcast(links[1])
    got: dict[str, list[dict[str, Any]]] = {"sender": [], "receiver": []}
    arrived = asyncio.Event()

    def on_receiver(body: dict[str, Any]) -> None:
        got["receiver"].append(body)
        if body.get("n") == 2:
            arrived.set()

    sender.on(CHANNEL, got["sender"].append)
    receiver.on(CHANNEL, on_receiver)
    try:
        for broadcast in (sender, receiver):
            await broadcast.start()
            async with asyncio.timeout(10):
                await broadcast.connected.wait()
        sender.publish(CHANNEL, {"n": 1})
        async with links[0].call() as r:  # someone else's garbage on the channel
            await r.publish(CHANNEL, b"not json")
            await r.publish(CHANNEL, b"[1, 2]")
        sender.publish(CHANNEL, {"n": 2})
        async with asyncio.timeout(10):
            await arrived.wait()
    finally:
        for broadcast in (sender, receiver):
            await broadcast.stop()
        for link in links:
            await link.aclose()
    assert [body["n"] for body in got["receiver"]] == [1, 2]
    assert got["receiver"][0]["origin"] == sender.origin
    assert got["sender"] == []  # its own messages are not handed back
    assert receiver.received == 2


async def test_publish_before_start_is_a_no_op(redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        Broadcast(link).publish(CHANNEL, {"n": 1})
    finally:
        await link.aclose()


@asynccontextmanager
async def started(
    url: str, handler: Callable[[dict[str, Any]], None] | None = None, *, timeout_s: float = 0.5
) -> AsyncIterator[Broadcast]:
    link = RedisLink(url, timeout_s=timeout_s)
    broadcast = Broadcast(link)
    if handler is not None:
        broadcast.on(CHANNEL, handler)
    await broadcast.start()
    try:
        async with asyncio.timeout(10):
            await broadcast.connected.wait()
        yield broadcast
    finally:
        await broadcast.stop()
        await link.aclose()


async def test_messages_on_channels_nobody_handles_are_ignored(redis_url: str) -> None:
    got: list[dict[str, Any]] = []
    async with started(redis_url, got.append) as receiver, started(redis_url) as sender:
        sender.publish(CHANNEL + ":other", {"n": 0})
        sender.publish(CHANNEL, {"n": 1})
        await eventually(lambda: len(got) == 1, what="the handled message")
    assert got[0]["n"] == 1 and receiver.received == 1


async def test_stop_lets_queued_messages_leave_first(redis_url: str) -> None:
    got: list[dict[str, Any]] = []
    async with started(redis_url, got.append):
        async with started(redis_url) as sender:
            for n in range(50):
                sender.publish(CHANNEL, {"n": n})
        # The sender stopped right after queueing; every message had left by then.
        await eventually(lambda: len(got) == 50, what="all 50 messages")
    assert [body["n"] for body in got] == list(range(50))  # in order


async def test_a_full_outbox_drops_and_counts_instead_of_blocking(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broadcast_module, "_OUTBOX", 2)
    async with started(redis_url) as sender:
        for n in range(5):  # no await between: the sending task has not run yet
            sender.publish(CHANNEL, {"n": n})
        assert sender.dropped == 3


async def test_messages_published_while_redis_is_down_are_dropped_then_delivery_resumes(
    redis_url: str,
) -> None:
    got: list[dict[str, Any]] = []
    async with (
        TcpProxy(REDIS_HOST, REDIS_PORT) as proxy,
        started(redis_url, got.append),
        started(f"redis://{proxy.address}/{TEST_DB}", timeout_s=0.2) as sender,
    ):
        await proxy.set_mode("blackhole")
        for n in range(3):
            sender.publish(CHANNEL, {"n": n})
        # The first times out; the ones queued behind it are stale by then and go with it.
        await eventually(lambda: sender.dropped > 0, what="a dropped message")
        assert sender.dropped == 3
        await proxy.set_mode("pass")
        sender.publish(CHANNEL, {"n": "after"})
        await eventually(lambda: len(got) == 1, what="the message sent after Redis came back")
    assert got[0]["n"] == "after"


async def test_a_lost_subscription_comes_back_and_runs_the_catch_up_hooks(redis_url: str) -> None:
    got: list[dict[str, Any]] = []
    caught_up: list[bool] = []
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        link = RedisLink(f"redis://{proxy.address}/{TEST_DB}", timeout_s=0.5)
        receiver = Broadcast(link)
        receiver.on(CHANNEL, got.append)
        receiver.on_connected(lambda: caught_up.append(receiver.connected.is_set()))
        await receiver.start()
        try:
            async with asyncio.timeout(10):
                await receiver.connected.wait()
            assert caught_up == [True]
            await proxy.set_mode("refuse")
            await eventually(lambda: not receiver.connected.is_set(), what="the subscription noticed as lost")
            await proxy.set_mode("pass")
            async with asyncio.timeout(10):
                await receiver.connected.wait()
            assert caught_up == [True, True]  # messages may have been missed: consumers re-read
            async with started(redis_url) as sender:
                sender.publish(CHANNEL, {"n": "again"})
                await eventually(lambda: len(got) == 1, what="a message on the new subscription")
        finally:
            await receiver.stop()
            await link.aclose()
