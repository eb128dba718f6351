"""Waits: wait_event (bounded, says whether the event was set, never loses a cancel) and QuietTimer."""

from __future__ import annotations

import asyncio

import pytest

from inference_club.waiting import (
    OwnerWatch,
    QuietTimer,
    cancel_and_wait,
    cancel_and_wait_quietly,
    wait_event,
)


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


async def test_a_loop_that_survives_one_cancel_is_cancelled_again_until_it_ends() -> None:
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # as if a library had turned this cancel into an error
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait(task, again_after_s=0.01)
    assert task.cancelled() and cancels == 2


async def test_cancel_and_wait_raises_what_the_task_ended_with() -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_a_quiet_timer_expires_only_a_wait_that_lasted_its_timeout() -> None:
    expired: list[float] = []
    loop = asyncio.get_running_loop()
    quiet = QuietTimer(0.1, lambda: expired.append(loop.time()))
    for _ in range(6):  # short waits, one after another, for longer than the timeout in all
        quiet.waiting()
        await asyncio.sleep(0.03)
        quiet.done_waiting()
    assert expired == [] and not quiet.expired
    await asyncio.sleep(0.15)  # nobody waits: time between waits never counts
    assert expired == []
    began = loop.time()
    quiet.waiting()
    await asyncio.sleep(0.25)
    assert len(expired) == 1 and quiet.expired
    assert expired[0] - began >= 0.1
    quiet.cancel()


async def test_a_cancelled_quiet_timer_never_fires() -> None:
    expired: list[bool] = []
    quiet = QuietTimer(0.05, lambda: expired.append(True))
    quiet.waiting()
    quiet.cancel()
    await asyncio.sleep(0.1)
    assert expired == [] and not quiet.expired


class _Fires(OwnerWatch):
    def __init__(self, signal: asyncio.Event, *, cancel: bool = True) -> None:
        self._signal = signal
        self._cancel = cancel
        super().__init__()

    async def _until(self) -> bool:
        await self._signal.wait()
        return self._cancel


async def test_an_owner_watch_cancels_its_owner_and_owns_up_to_it() -> None:
    signal = asyncio.Event()

    async def owner() -> str:
        watch = _Fires(signal)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "absorbed" if watch.absorb() else "not mine"
        return "slept"

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    signal.set()
    assert await task == "absorbed" and not task.cancelled()


async def test_an_owner_watch_stopped_or_declining_cancels_nothing() -> None:
    signal = asyncio.Event()

    async def owner(cancel: bool, stop_first: bool) -> str:
        watch = _Fires(signal, cancel=cancel)
        if stop_first:
            watch.stop()
        await asyncio.sleep(0.05)
        assert not watch.absorb()
        return "done"

    runs = [asyncio.create_task(owner(False, False)), asyncio.create_task(owner(True, True))]
    await asyncio.sleep(0)
    signal.set()
    assert await asyncio.gather(*runs) == ["done", "done"]

    async def cancelled_by_another() -> None:
        watch = _Fires(asyncio.Event())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            assert not watch.absorb()  # not this watch's doing: the cancel goes on
            raise

    other = asyncio.create_task(cancelled_by_another())
    await asyncio.sleep(0)
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_cancel_and_wait_quietly_waits_for_the_task_and_keeps_the_callers_own_cancel() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    failing = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    await cancel_and_wait_quietly(failing)  # how it ended is not the caller's failure
    assert failing.done() and isinstance(failing.exception(), RuntimeError)

    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # takes its time to wind down
            raise

    slow = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait_quietly(slow))
    await asyncio.sleep(0.01)
    caller.cancel()  # the caller is cancelled while it waits
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await asyncio.wait({slow})
    assert slow.cancelled()
