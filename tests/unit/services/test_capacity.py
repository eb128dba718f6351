"""Capacity slots: FIFO waits, timeouts, background work yields to waiting requests."""

from __future__ import annotations

import asyncio

from inference_club.services.capacity import Capacity, CircuitBreaker

A = ("prov_a", 0)
B = ("prov_b", 0)


async def test_slots_and_fifo_hand_over() -> None:
    capacity = Capacity()
    capacity.set_limit(A, 1)
    assert await capacity.acquire([A], timeout_s=0.1) == A
    first = asyncio.create_task(capacity.acquire([A], timeout_s=2))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(capacity.acquire([A], timeout_s=2))
    await asyncio.sleep(0.01)
    capacity.release(A)
    assert await first == A
    assert not second.done()
    capacity.release(A)
    assert await second == A
    capacity.release(A)
    assert capacity.load(A) == 0


async def test_timeout_returns_none_and_leaves_no_waiter() -> None:
    capacity = Capacity()
    capacity.set_limit(A, 1)
    capacity.try_acquire([A])
    assert await capacity.acquire([A], timeout_s=0.05) is None
    assert not capacity.has_waiters()


async def test_background_work_never_takes_a_slot_someone_waits_for() -> None:
    capacity = Capacity()
    capacity.set_limit(A, 1)
    capacity.set_limit(B, 1)
    capacity.try_acquire([A])
    waiter = asyncio.create_task(capacity.acquire([A], timeout_s=2))
    await asyncio.sleep(0.01)
    assert capacity.try_acquire([A, B], background=True) == B  # A is wanted by a waiting request
    capacity.release(A)
    assert await waiter == A


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    capacity = Capacity()
    capacity.set_limit(A, 1)
    capacity.try_acquire([A])
    waiter = asyncio.create_task(capacity.acquire([A], timeout_s=2))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.sleep(0.01)
    capacity.release(A)
    assert capacity.load(A) == 0


async def test_release_listeners_wake_dispatchers() -> None:
    capacity = Capacity()
    capacity.set_limit(A, 1)
    freed: list[tuple[str, int]] = []
    capacity.on_release(freed.append)
    capacity.try_acquire([A])
    capacity.release(A)
    assert freed == [A]


def test_breaker_opens_after_threshold_and_resets_on_success() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=60)
    breaker.failure("p")
    assert not breaker.is_open("p")
    breaker.failure("p")
    assert breaker.is_open("p") and breaker.state("p") == "open"
    breaker.success("p")
    assert breaker.state("p") == "closed"
