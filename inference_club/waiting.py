"""Bounded waits that never swallow a cancellation.

On Python 3.11 ``asyncio.wait_for`` can drop a ``cancel()`` that arrives just as the
awaited thing completes: the task carries on as if never cancelled, so a background
loop's ``task.cancel(); await task`` hangs. ``asyncio.timeout`` runs the wait in the
caller's own task and keeps the cancel, so bounded waits use it (ruff bans wait_for).
"""

from __future__ import annotations

import asyncio


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
