"""wait_event: a bounded wait on an event that reports whether it was set and never loses a cancel."""

from __future__ import annotations

import asyncio

import pytest

from inference_club.waiting import wait_event


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    assert await wait_event(event, 0) is False
    event.set()
    assert await wait_event(event, 0) is True
    assert await wait_event(event, None) is True


async def test_a_cancel_that_meets_the_wake_up_ends_the_waiting_loop() -> None:
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait_event(event, 3600)
            event.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # one turn: the loop is waiting
    event.set()
    task.cancel()  # in the same turn as the wake-up
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert rounds == 0
