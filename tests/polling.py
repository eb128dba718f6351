"""Waiting in tests for something that happens in the background: poll it, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def eventually(
    check: Callable[[], object], timeout: float = 10.0, *, what: str = "the condition"
) -> None:
    """Return once ``check()`` (or what it awaits to) is truthy; fail naming ``what`` after ``timeout`` s.

    Polls every 10 ms: a test never sleeps for a fixed time to let something happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)
