"""Bounded waits that never swallow a cancellation.

On Python 3.11 ``asyncio.wait_for`` can drop a ``cancel()`` that arrives just as the
awaited thing completes: the task carries on as if never cancelled, so a background
loop's ``task.cancel(); await task`` hangs. ``asyncio.timeout`` runs the wait in the
caller's own task and keeps the cancel, so bounded waits use it (ruff bans wait_for).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until ``event`` is set, at most ``timeout_s`` (``None``: no limit); True when set.

    A cancel of the calling task always propagates.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return event.is_set()  # set in the same instant the time ran out
    return True


async def cancel_and_wait(task: asyncio.Task[Any], *, again_after_s: float = 1.0) -> None:
    """Cancel a background loop's ``task`` and wait until it has ended.

    A library's own timeout can meet a cancel and turn it into an error the loop survives
    (redis-py's read timeout, raised as an outage): that cancel is lost and a plain
    ``await task`` never returns. So the task is cancelled again while it runs on. Its
    cancellation is swallowed; any other exception it ended with is raised.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=again_after_s)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel_and_wait_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, whatever it ends with (nothing is raised). A cancel
    of the caller while it waits goes on (``await task`` under a suppress would swallow
    it too)."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: how it ended is not the caller's failure


class OwnerWatch:
    """A watcher task that cancels its owner, the task that made it, when :meth:`_until`
    says so (a client or the hub went away). The owner then asks :meth:`absorb` whether a
    ``CancelledError`` it caught came from here, and stops the watch when done with it.

    ``in_task=False``: no task; something else calls :meth:`_fire` when it is time (a
    server that tells of a client leaving), and :meth:`_until` is not used.
    """

    def __init__(self, *, in_task: bool = True) -> None:
        owner = asyncio.current_task()
        assert owner is not None, "an OwnerWatch runs inside the task it watches for"
        self._owner = owner
        self.fired = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = owner.get_loop().create_task(self._run()) if in_task else None

    async def _until(self) -> bool:
        """Return True to cancel the owner (False: end quietly)."""
        raise NotImplementedError

    async def _run(self) -> None:
        if await self._until():
            self._fire()

    def _fire(self) -> None:
        if not (self._stopped or self.fired):
            self.fired = True
            self._owner.cancel()

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) when this watch caused it."""
        self.stop()
        if not self.fired:
            return False
        self._owner.uncancel()
        return True


class QuietTimer:
    """Calls ``expire`` once a single wait has lasted ``timeout_s``: a read timeout for a loop of reads.

    ``asyncio.timeout`` around each read of a streamed answer arms and cancels a timer per
    chunk. This keeps one timer, moved on only when it fires while a wait is younger than
    the timeout (or when nobody waits), so a stream of chunks costs two attribute writes
    per read. ``expire`` runs in a timer callback and must make the wait end (fail its
    future, reset its stream); :attr:`expired` then tells the waiter why it ended.

    ``with quiet: await ...`` times one wait (:meth:`waiting`, then :meth:`done_waiting`).
    """

    __slots__ = ("_expire", "_handle", "_loop", "_since", "_timeout", "expired")

    def __init__(
        self, timeout_s: float, expire: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        # Callers that hold their loop pass it: on Python 3.11 each lookup is a getpid() call.
        self._loop = loop or asyncio.get_running_loop()
        self._timeout = timeout_s
        self._expire = expire
        self._since: float | None = None  # when the current wait began; None between waits
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def waiting(self) -> None:
        """A wait begins now."""
        self._since = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._timeout, self._check)

    def done_waiting(self) -> None:
        self._since = None

    def __enter__(self) -> None:
        self.waiting()

    def __exit__(self, *exc_info: object) -> None:
        self._since = None

    def cancel(self) -> None:
        """No more waits: drop the timer."""
        self._since = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._since is None:
            return  # between waits: the next one arms a new timer
        deadline = self._since + self._timeout
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self.expired = True
        self._since = None
        self._expire()
