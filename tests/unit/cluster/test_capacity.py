"""Shared capacity slots in a real Redis: two capacity objects stand for two replicas.

The first tests are scenarios that take seconds (lease TTLs run out, an outage); the ones
after them play expiry by writing lease scores in the past.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from inference_club.cluster.capacity import RedisCapacity, events_channel
from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.testing.servers import free_port
from inference_club.testing.tcp_proxy import TcpProxy
from tests.polling import eventually
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB

DB = TEST_DB
X = ("prov_x", 0)
Y = ("prov_y", 0)


@asynccontextmanager
async def replica(
    url: str, *, limits: dict[tuple[str, int], int], **options: Any
) -> AsyncIterator[RedisCapacity]:
    link = RedisLink(url)
    capacity = RedisCapacity(link, **options)
    for key, limit in limits.items():
        capacity.set_limit(key, limit)
    await capacity.start()
    try:
        yield capacity
    finally:
        await capacity.stop()
        await link.aclose()


async def live_leases(url: str, key: tuple[str, int]) -> int:
    link = RedisLink(url)
    try:
        async with link.call() as r:
            t = await r.time()
            now_ms = t[0] * 1000 + t[1] // 1000
            return int(await r.zcount(f"ic:slot:{{{key[0]}:{key[1]}}}:leases", now_ms, "+inf"))
    finally:
        await link.aclose()


async def test_limit_holds_under_200_concurrent_acquires_from_two_replicas(redis_url: str) -> None:
    limit = 3
    async with replica(redis_url, limits={X: limit}) as a, replica(redis_url, limits={X: limit}) as b:
        holding = 0
        peak = 0

        async def one(capacity: RedisCapacity) -> None:
            nonlocal holding, peak
            got = await capacity.acquire([X], timeout_s=60)
            assert got == X
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.005)
            holding -= 1
            capacity.release(X)

        await asyncio.gather(*[one(a if i % 2 else b) for i in range(200)])
        assert peak == limit  # reached, never exceeded
        await eventually(lambda: _is(live_leases(redis_url, X), 0))
        await eventually(lambda: _true(a.load(X) == 0 and b.load(X) == 0))


async def test_a_dead_holders_slot_frees_after_the_lease_ttl(redis_url: str) -> None:
    async with AsyncExitStack() as exits:
        dead = await exits.enter_async_context(replica(redis_url, limits={X: 1}, lease_ttl_s=1.0))
        alive = await exits.enter_async_context(replica(redis_url, limits={X: 1}, lease_ttl_s=1.0))
        assert await dead.take([X]) == X
        # The holder's process dies: nothing renews or releases its lease any more.
        assert dead._renewer is not None
        dead._renewer.cancel()
        dead._held.clear()
        assert await alive.take([X]) is None
        assert await alive.acquire([X], timeout_s=10) == X
        alive.release(X)


async def test_a_renewed_lease_outlives_its_ttl(redis_url: str) -> None:
    async with (
        replica(redis_url, limits={X: 1}, lease_ttl_s=1.2) as a,
        replica(redis_url, limits={X: 1}, lease_ttl_s=1.2) as b,
    ):
        assert await a.take([X]) == X
        for _ in range(10):  # two and a half lease lifetimes
            await asyncio.sleep(0.3)
            assert await b.take([X]) is None
        a.release(X)
        assert await b.acquire([X], timeout_s=10) == X
        b.release(X)


async def test_a_waiter_wakes_on_a_release_from_another_replica(redis_url: str) -> None:
    # Polling is set far beyond the wait: only the release event can hand the slot over.
    async with replica(redis_url, limits={X: 1}) as a, replica(redis_url, limits={X: 1}, poll_s=60) as b:
        assert await a.take([X]) == X
        waiter = asyncio.create_task(b.acquire([X], timeout_s=20))
        await eventually(lambda: _queued(redis_url, X, 1))
        assert not waiter.done()
        a.release(X)
        assert await waiter == X
        b.release(X)


async def test_waiters_are_served_first_come_first_served_across_replicas(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 1}) as a, replica(redis_url, limits={X: 1}) as b:
        assert await a.take([X]) == X
        order: list[str] = []

        async def wait(capacity: RedisCapacity, name: str) -> None:
            assert await capacity.acquire([X], timeout_s=20) == X
            order.append(name)
            await asyncio.sleep(0.05)
            capacity.release(X)

        first = asyncio.create_task(wait(b, "first"))
        await eventually(lambda: _queued(redis_url, X, 1))
        second = asyncio.create_task(wait(a, "second"))
        await eventually(lambda: _queued(redis_url, X, 2))
        third = asyncio.create_task(wait(b, "third"))
        await eventually(lambda: _queued(redis_url, X, 3))
        a.release(X)
        await asyncio.gather(first, second, third)
        assert order == ["first", "second", "third"]


async def test_background_work_never_takes_a_slot_another_replica_waits_for(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 1, Y: 1}) as a, replica(redis_url, limits={X: 1, Y: 1}) as b:
        assert await a.take([X]) == X
        waiter = asyncio.create_task(b.acquire([X], timeout_s=20))
        await eventually(lambda: _queued(redis_url, X, 1))
        assert await a.take([X, Y], background=True) == Y  # X is wanted by a queued request
        a.release(X)
        assert await waiter == X
        assert await a.take([X], background=True) is None  # full
        b.release(X)
        a.release(Y)


async def test_a_timed_out_or_cancelled_waiter_leaves_the_queue(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 1}) as a, replica(redis_url, limits={X: 1}) as b:
        assert await a.take([X]) == X
        assert await b.acquire([X], timeout_s=0.3) is None
        cancelled = asyncio.create_task(b.acquire([X], timeout_s=20))
        await eventually(lambda: _queued(redis_url, X, 1))
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await eventually(lambda: _queued(redis_url, X, 0))
        assert not b.has_waiters()
        a.release(X)
        await eventually(lambda: _is(live_leases(redis_url, X), 0))


async def test_load_follows_other_replicas_through_events(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 4}) as a, replica(redis_url, limits={X: 4}) as b:
        freed: list[tuple[str, int]] = []
        b.on_release(freed.append)
        assert await a.take([X]) == X and await a.take([X]) == X
        await eventually(lambda: _true(b.load(X) == 2))
        assert b.snapshot()[X] == (2, 4)
        a.release(X)
        await eventually(lambda: _true(b.load(X) == 1))
        assert X in freed
        a.release(X)
        await eventually(lambda: _true(b.load(X) == 0))


async def test_redis_outage_answers_busy_then_recovers_and_retakes_leases(redis_url: str) -> None:
    async with (
        TcpProxy(REDIS_HOST, REDIS_PORT) as proxy,
        replica(f"redis://{proxy.address}/{DB}", limits={X: 2}, lease_ttl_s=0.9) as a,
    ):
        assert await a.take([X]) == X
        await proxy.set_mode("blackhole")
        with pytest.raises(SharedStateUnavailable):
            async with asyncio.timeout(10):
                await a.acquire([X], timeout_s=5)
        await proxy.set_mode("refuse")
        with pytest.raises(SharedStateUnavailable):
            async with asyncio.timeout(10):
                await a.take([X])
        await asyncio.sleep(1.2)  # the held lease expired in Redis meanwhile
        assert await live_leases(redis_url, X) == 0
        await proxy.set_mode("pass")
        await eventually(lambda: _is(live_leases(redis_url, X), 1))  # renewed: taken again
        async with asyncio.timeout(10):
            assert await a.acquire([X], timeout_s=5) == X
        a.release(X)
        a.release(X)
        await eventually(lambda: _is(live_leases(redis_url, X), 0))


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def _queued(url: str, key: tuple[str, int], count: int) -> bool:
    link = RedisLink(url)
    try:
        async with link.call() as r:
            return int(await r.zcard(f"ic:slot:{{{key[0]}:{key[1]}}}:wait")) == count
    finally:
        await link.aclose()


async def _expire_all_leases(url: str, key: tuple[str, int]) -> None:
    """Play the TTL running out for every lease of ``key`` (scores are expiry times)."""
    link = RedisLink(url)
    try:
        async with link.call() as r:
            t = await r.time()
            past = t[0] * 1000 + t[1] // 1000 - 1
            leases_key = f"ic:slot:{{{key[0]}:{key[1]}}}:leases"
            for lease in await r.zrange(leases_key, 0, -1):
                assert isinstance(lease, bytes)
                await r.zadd(leases_key, {lease: past})
    finally:
        await link.aclose()


def test_the_events_channel_is_per_redis_database() -> None:
    # Pub/sub ignores database numbers; two clusters on one Redis server must not mix.
    assert events_channel(RedisLink("redis://127.0.0.1:1/7")) != events_channel(
        RedisLink("redis://127.0.0.1:1/8")
    )
    assert events_channel(RedisLink("redis://127.0.0.1:1")) == events_channel(
        RedisLink("redis://127.0.0.1:1/0")
    )


async def test_no_candidates_is_no_slot_without_asking_redis() -> None:
    capacity = RedisCapacity(RedisLink(f"redis://127.0.0.1:{free_port()}/0"))
    assert await capacity.take([]) is None
    assert await capacity.acquire([], timeout_s=5) is None


async def test_stopping_gives_back_the_leases_held_at_once(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 2}) as a:
        assert await a.take([X]) == X
        assert await a.take([X]) == X
        assert await live_leases(redis_url, X) == 2
    assert await live_leases(redis_url, X) == 0  # not after the lease TTL


async def test_a_raised_limit_wakes_a_waiter_at_once(redis_url: str) -> None:
    # Polling and lease renewal (which rereads the counts) are set far beyond the wait:
    # only the raised limit can wake the waiter.
    async with (
        replica(redis_url, limits={X: 1}) as a,
        replica(redis_url, limits={X: 1}, poll_s=60, lease_ttl_s=600) as b,
    ):
        assert await a.take([X]) == X
        waiter = asyncio.create_task(b.acquire([X], timeout_s=30))
        await eventually(lambda: _queued(redis_url, X, 1))
        assert b.waiting == 1
        b.set_limit(X, 1)  # unchanged: nobody woken
        b.set_limit(X, 2)
        async with asyncio.timeout(10):
            assert await waiter == X
        assert b.snapshot()[X][1] == 2
        b.release(X)
        a.release(X)


async def test_an_expired_lease_is_taken_again_by_its_holder_while_there_is_room(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 1}, lease_ttl_s=60) as a:
        assert await a.take([X]) == X
        await _expire_all_leases(redis_url, X)
        assert await live_leases(redis_url, X) == 0
        await a.renew()
        assert await live_leases(redis_url, X) == 1
        a.release(X)
        await eventually(lambda: _is(live_leases(redis_url, X), 0))


async def test_a_lease_lost_to_another_holder_is_not_taken_back_later(redis_url: str) -> None:
    async with replica(redis_url, limits={X: 1}, lease_ttl_s=60) as a, replica(redis_url, limits={X: 1}) as b:
        assert await a.take([X]) == X
        await _expire_all_leases(redis_url, X)
        assert await b.take([X]) == X  # the slot went to b meanwhile
        await a.renew()  # a's request runs on without a lease
        b.release(X)
        await eventually(lambda: _is(live_leases(redis_url, X), 0))
        await a.renew()
        assert await live_leases(redis_url, X) == 0  # a holds no lease to renew any more
        freed: list[tuple[str, int]] = []
        a.on_release(freed.append)
        a.release(X)  # the unleased request ends
        assert freed == [X]
        assert await a.take([X]) == X  # and a's count of it is square again
        a.release(X)


async def test_a_failing_redis_refuses_the_calls_queued_behind_at_once(redis_url: str) -> None:
    async with (
        TcpProxy(REDIS_HOST, REDIS_PORT) as proxy,
        replica(f"redis://{proxy.address}/{DB}", limits={X: 1}) as a,
    ):
        await proxy.set_mode("refuse")
        with pytest.raises(SharedStateUnavailable):
            await a.take([X])
        connections = proxy.connections
        await proxy.set_mode("pass")
        # Within the failing window, no call reaches Redis even though it is back.
        with pytest.raises(SharedStateUnavailable):
            await a.take([X])
        assert proxy.connections == connections
