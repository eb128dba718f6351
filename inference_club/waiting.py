"""Bounded waits that never swallow a cancellation.

On Python 3.11 ``asyncio.wait_for`` can drop a ``cancel()`` that arrives just as the
awaited thing completes: the task carries on as if never cancelled, so a background
loop's ``task.cancel(); await task`` hangs. ``asyncio.timeout`` runs the wait in the
caller's own task and keeps the cancel, so bounded waits use it (ruff bans wait_for).
"""

from __future__ import annotations

import asyncio
import contextlib
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
