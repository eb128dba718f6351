"""The capacity slots' Lua scripts run on a real Redis: leases, expiry, FIFO permits, events.

Expiry is played by writing scores in the past (the scripts read Redis's clock), so no test
waits for a TTL to run out.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from inference_club.cluster import slot_scripts

TTL_MS = 60_000
P = "prov_p 0"  # event names, "<provider> <index>"
Q = "prov_q 1"


def slot(name: str) -> list[str]:
    base = "ic:slot:{" + name.replace(" ", ":") + "}"
    return [f"{base}:leases", f"{base}:wait", f"{base}:wexp"]


class Slots:
    """The five scripts, called with the key and argument layout ``cluster/capacity.py`` uses."""

    def __init__(self, r: aioredis.Redis, channel: str) -> None:
        self.r = r
        self.channel = channel
        self._acquire = r.register_script(slot_scripts.ACQUIRE)
        self._release = r.register_script(slot_scripts.RELEASE)
        self._leave = r.register_script(slot_scripts.LEAVE)
        self._renew = r.register_script(slot_scripts.RENEW)
        self._count = r.register_script(slot_scripts.COUNT)

    async def acquire(
        self,
        slots: Sequence[tuple[str, int]],
        lease: str,
        *,
        mode: str = "now",
        waiter: str = "",
        lease_ttl_ms: int = TTL_MS,
        waiter_ttl_ms: int = TTL_MS,
    ) -> int:
        keys = [k for name, _ in slots for k in slot(name)]
        args: list[str | int] = [lease, lease_ttl_ms, waiter, waiter_ttl_ms, mode, self.channel]
        args += [limit for _, limit in slots] + [name for name, _ in slots]
        return int(await self._acquire(keys=keys, args=args))

    async def release(self, slots: Sequence[tuple[str, int]], lease: str) -> int:
        keys = [k for name, _ in slots for k in slot(name)]
        args: list[str | int] = [lease, self.channel]
        for name, limit in slots:
            args += [name, limit]
        return int(await self._release(keys=keys, args=args))

    async def leave(self, slots: Sequence[tuple[str, int]], waiter: str) -> int:
        keys = [k for name, _ in slots for k in slot(name)]
        args: list[str | int] = [waiter, self.channel]
        for name, limit in slots:
            args += [name, limit]
        return int(await self._leave(keys=keys, args=args))

    async def renew(self, held: Sequence[tuple[str, str, int]], lease_ttl_ms: int = TTL_MS) -> list[int]:
        args: list[str | int] = [lease_ttl_ms]
        for _, lease, limit in held:
            args += [lease, limit]
        result = await self._renew(keys=[slot(name)[0] for name, _, _ in held], args=args)
        return [int(x) for x in result]

    async def count(self, *names: str) -> list[int]:
        return [int(x) for x in await self._count(keys=[slot(n)[0] for n in names])]

    async def now_ms(self) -> int:
        seconds, micros = await self.r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def expire_lease(self, name: str, lease: str) -> None:
        await self.r.zadd(slot(name)[0], {lease: await self.now_ms() - 1})

    async def queued(self, name: str) -> list[str]:
        return [
            w.decode() if isinstance(w, bytes) else str(w) for w in await self.r.zrange(slot(name)[1], 0, -1)
        ]


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
async def events(r: aioredis.Redis) -> AsyncIterator[PubSub]:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    # Pub/sub is server-wide: a channel of this test's own.
    await pubsub.subscribe(f"test:slots:{secrets.token_hex(6)}")
    yield pubsub
    await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.fixture
def slots(r: aioredis.Redis, events: PubSub) -> Slots:
    (channel,) = events.channels
    return Slots(r, channel.decode() if isinstance(channel, bytes) else str(channel))


async def next_event(events: PubSub) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = await events.get_message(timeout=1.0)
        if message is not None and message["type"] == "message":
            return str(message["data"].decode())
    raise AssertionError("no slot event arrived")


async def no_more_events(events: PubSub, slots: Slots) -> None:
    """Nothing was published before a marker this test publishes itself."""
    await slots.r.publish(slots.channel, b"marker")
    assert await next_event(events) == "marker"


# --------------------------------------------------------------------------- acquire


async def test_leases_are_taken_up_to_the_limit_and_each_take_is_announced(
    slots: Slots, events: PubSub
) -> None:
    assert await slots.acquire([(P, 2)], "l1") == 1
    assert await slots.acquire([(P, 2)], "l2") == 1
    assert await slots.acquire([(P, 2)], "l3") == 0
    assert [await next_event(events), await next_event(events)] == [f"{P} 1", f"{P} 2"]
    await no_more_events(events, slots)  # a refusal changes no count
    now = await slots.now_ms()
    expiry = await slots.r.zscore(slot(P)[0], "l1")
    assert expiry is not None and now < expiry <= now + TTL_MS
    # The whole set outlives its leases a while, then goes by itself.
    assert 0 < await slots.r.pttl(slot(P)[0]) <= 4 * TTL_MS


async def test_candidates_are_tried_in_order_and_the_taken_one_is_numbered_from_one(slots: Slots) -> None:
    assert await slots.acquire([(P, 1), (Q, 1)], "a") == 1
    assert await slots.acquire([(P, 1), (Q, 1)], "b") == 2
    assert await slots.acquire([(P, 1), (Q, 1)], "c") == 0
    assert await slots.count(P, Q) == [1, 1]


async def test_an_expired_lease_frees_its_slot_for_the_next_caller(slots: Slots) -> None:
    assert await slots.acquire([(P, 1)], "dead") == 1
    assert await slots.acquire([(P, 1)], "next") == 0
    await slots.expire_lease(P, "dead")
    assert await slots.count(P) == [0]
    assert await slots.acquire([(P, 1)], "next") == 1
    assert await slots.r.zscore(slot(P)[0], "dead") is None  # purged, not just ignored


# --------------------------------------------------------------------------- waiting and permits


async def test_a_refused_waiter_queues_on_every_candidate_keeping_its_first_place(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held_p")
    await slots.acquire([(Q, 1)], "held_q")
    assert await slots.acquire([(P, 1), (Q, 1)], "l", mode="wait", waiter="w1") == 0
    first = await slots.r.zscore(slot(P)[1], "w1")
    assert await slots.queued(P) == ["w1"] and await slots.queued(Q) == ["w1"]
    assert await slots.r.zscore(slot(P)[2], "w1") is not None  # its own expiry
    assert await slots.acquire([(P, 1), (Q, 1)], "l", mode="wait", waiter="w1") == 0
    assert await slots.r.zscore(slot(P)[1], "w1") == first  # still first come


async def test_free_slots_go_to_the_oldest_waiters_first(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held")
    for waiter in ("w1", "w2"):
        assert await slots.acquire([(P, 1)], f"lease_{waiter}", mode="wait", waiter=waiter) == 0
    await slots.release([(P, 1)], "held")
    # One slot free, one waiter ahead: the second is refused, the first takes it.
    assert await slots.acquire([(P, 1)], "lease_w2", mode="wait", waiter="w2") == 0
    assert await slots.acquire([(P, 1)], "lease_new", mode="now") == 0  # nor a newcomer
    assert await slots.acquire([(P, 1)], "lease_w1", mode="wait", waiter="w1") == 1
    assert await slots.queued(P) == ["w2"]


async def test_a_waiter_that_gets_a_slot_leaves_every_queue(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held_p")
    await slots.acquire([(Q, 1)], "held_q")
    await slots.acquire([(P, 1), (Q, 1)], "l", mode="wait", waiter="w1")
    await slots.release([(Q, 1)], "held_q")
    assert await slots.acquire([(P, 1), (Q, 1)], "l", mode="wait", waiter="w1") == 2
    assert await slots.queued(P) == [] and await slots.queued(Q) == []
    assert await slots.r.zcard(slot(P)[2]) == 0


async def test_a_caller_that_does_not_wait_takes_only_slots_beyond_the_queue(slots: Slots) -> None:
    await slots.acquire([(P, 2)], "held")
    await slots.acquire([(P, 1)], "l", mode="wait", waiter="w1")  # refused at limit 1: queued
    assert await slots.queued(P) == ["w1"]
    # Limit 2, one used, one queued: the free slot is the waiter's.
    assert await slots.acquire([(P, 2)], "now", mode="now") == 0
    # Limit 3: two free, one queued: one is left for a caller who does not queue.
    assert await slots.acquire([(P, 3)], "now", mode="now") == 1


async def test_background_work_yields_to_any_queued_waiter(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held")
    await slots.acquire([(P, 1)], "l", mode="wait", waiter="w1")
    assert await slots.acquire([(P, 5)], "bg", mode="bg") == 0
    await slots.leave([(P, 1)], "w1")
    assert await slots.acquire([(P, 5)], "bg", mode="bg") == 1


async def test_an_expired_waiter_no_longer_holds_anyone_back(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held")
    await slots.acquire([(P, 1)], "l", mode="wait", waiter="gone")
    await slots.r.zadd(slot(P)[2], {"gone": await slots.now_ms() - 1})
    assert await slots.acquire([(P, 2)], "bg", mode="bg") == 1
    assert await slots.queued(P) == []


# --------------------------------------------------------------------------- release and leave


async def test_release_drops_the_lease_wherever_it_is_and_wakes_the_queue_heads(
    slots: Slots, events: PubSub
) -> None:
    await slots.acquire([(P, 2)], "a")
    await slots.acquire([(P, 2)], "b")
    for waiter in ("w1", "w2", "w3"):
        await slots.acquire([(P, 2)], "l", mode="wait", waiter=waiter)
    assert [await next_event(events) for _ in range(2)] == [f"{P} 1", f"{P} 2"]
    # The caller does not know which candidate it got: it names both.
    assert await slots.release([(Q, 2), (P, 2)], "a") == 1
    assert await next_event(events) == f"{P} 1 w1"  # one free slot: the head of the queue
    await slots.leave([(P, 2)], "w1")
    assert await next_event(events) == f"{P} 1 w2"
    assert await slots.release([(P, 2)], "b") == 1
    assert await next_event(events) == f"{P} 0 w2 w3"  # two free: the two at the head
    assert await slots.release([(P, 2)], "b") == 0  # already gone: nothing to announce
    await no_more_events(events, slots)


async def test_leave_takes_the_waiter_out_of_every_queue(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "held_p")
    await slots.acquire([(Q, 1)], "held_q")
    await slots.acquire([(P, 1), (Q, 1)], "l", mode="wait", waiter="w1")
    await slots.acquire([(P, 1), (Q, 1)], "l2", mode="wait", waiter="w2")
    assert await slots.leave([(P, 1), (Q, 1)], "w1") == 1
    assert await slots.queued(P) == ["w2"] and await slots.queued(Q) == ["w2"]
    assert await slots.r.zscore(slot(P)[2], "w1") is None


# --------------------------------------------------------------------------- renew and count


async def test_renew_extends_a_held_lease(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "mine", lease_ttl_ms=1000)
    before = await slots.r.zscore(slot(P)[0], "mine")
    assert await slots.renew([(P, "mine", 1)], lease_ttl_ms=TTL_MS) == [1]
    after = await slots.r.zscore(slot(P)[0], "mine")
    assert before is not None and after is not None and after > before + 30_000


async def test_renew_retakes_an_expired_lease_while_there_is_room_else_reports_it_lost(slots: Slots) -> None:
    await slots.acquire([(P, 1)], "mine")
    await slots.acquire([(Q, 1)], "mine_q")
    await slots.expire_lease(P, "mine")
    await slots.expire_lease(Q, "mine_q")
    await slots.acquire([(Q, 1)], "someone_else")
    assert await slots.renew([(P, "mine", 1), (Q, "mine_q", 1)]) == [2, 0]
    assert await slots.r.zscore(slot(P)[0], "mine") is not None
    assert await slots.r.zscore(slot(Q)[0], "mine_q") is None
    assert await slots.count(P, Q) == [1, 1]


async def test_count_reads_live_leases_only(slots: Slots) -> None:
    for lease in ("a", "b", "c"):
        await slots.acquire([(P, 5)], lease)
    await slots.expire_lease(P, "b")
    assert await slots.count(P, Q) == [2, 0]


async def test_scripts_agree_under_concurrent_callers(slots: Slots) -> None:
    results = await asyncio.gather(*[slots.acquire([(P, 3)], f"l{i}") for i in range(30)])
    assert sorted(results) == [0] * 27 + [1] * 3
