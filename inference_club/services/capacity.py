"""Capacity slots per (provider, service) with a FIFO wait, and the circuit breaker.

A request holds one slot of its service's ``max_concurrency`` while it runs.
Synchronous requests wait in one FIFO queue; a freed slot goes to the oldest waiter
that can use it. Background work (jobs) only takes a slot nobody is waiting for, so
interactive requests always go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from inference_club.domain.routing import SlotKey


class SlotPool(Protocol):
    """What routing needs of capacity slots: this module's in-process :class:`Capacity`,
    or the Redis-backed one shared by the replicas of a scaled-out hub."""

    def load(self, key: SlotKey) -> int: ...
    def set_limit(self, key: SlotKey, limit: int) -> None: ...
    async def take(self, keys: Sequence[SlotKey], *, background: bool = False) -> SlotKey | None: ...
    async def acquire(self, keys: Sequence[SlotKey], *, timeout_s: float) -> SlotKey | None: ...
    def release(self, key: SlotKey) -> None: ...
    def on_release(self, listener: Callable[[SlotKey], None]) -> None: ...
    def has_waiters(self) -> bool: ...
    @property
    def waiting(self) -> int: ...
    def snapshot(self) -> dict[SlotKey, tuple[int, int]]: ...


@dataclass(slots=True)
class _Waiter:
    keys: frozenset[SlotKey]
    future: asyncio.Future[SlotKey]


@dataclass(slots=True)
class Capacity:
    """In-process slot accounting (one hub process)."""

    _in_use: dict[SlotKey, int] = field(default_factory=dict)
    _limits: dict[SlotKey, int] = field(default_factory=dict)
    _waiters: deque[_Waiter] = field(default_factory=deque)
    _listeners: list[Callable[[SlotKey], None]] = field(default_factory=list)

    def load(self, key: SlotKey) -> int:
        return self._in_use.get(key, 0)

    def set_limit(self, key: SlotKey, limit: int) -> None:
        self._limits[key] = limit
        self._hand_over(key)

    def _free(self, key: SlotKey) -> bool:
        return self._in_use.get(key, 0) < self._limits.get(key, 1)

    def _take(self, key: SlotKey) -> None:
        self._in_use[key] = self._in_use.get(key, 0) + 1

    def try_acquire(self, keys: Sequence[SlotKey], *, background: bool = False) -> SlotKey | None:
        """Take the first free slot among ``keys`` (already ordered by preference).

        ``background`` work never takes a slot a synchronous request is waiting for.
        """
        waited = {k for w in self._waiters for k in w.keys} if background else set()
        for key in keys:
            if self._free(key) and key not in waited:
                self._take(key)
                return key
        return None

    async def take(self, keys: Sequence[SlotKey], *, background: bool = False) -> SlotKey | None:
        """:meth:`try_acquire` behind the awaitable interface the shared slots need."""
        return self.try_acquire(keys, background=background)

    async def acquire(self, keys: Sequence[SlotKey], *, timeout_s: float) -> SlotKey | None:
        """Take a slot, waiting FIFO up to ``timeout_s``; ``None`` on timeout."""
        if not self._waiters:
            got = self.try_acquire(keys)
            if got is not None:
                return got
        waiter = _Waiter(frozenset(keys), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        # A slot may be free now but was skipped because older waiters queue; let them go first.
        for key in keys:
            self._hand_over(key)
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return waiter.future.result()
            waiter.future.cancel()
            return None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())
            waiter.future.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, key: SlotKey) -> None:
        count = self._in_use.get(key, 0) - 1
        if count > 0:
            self._in_use[key] = count
        else:
            self._in_use.pop(key, None)
        self._hand_over(key)
        for listener in self._listeners:
            listener(key)

    def on_release(self, listener: Callable[[SlotKey], None]) -> None:
        """Called after a slot frees (the job dispatcher wakes on it)."""
        self._listeners.append(listener)

    def has_waiters(self) -> bool:
        return bool(self._waiters)

    @property
    def waiting(self) -> int:
        """Synchronous requests waiting for a slot right now."""
        return len(self._waiters)

    def _hand_over(self, key: SlotKey) -> None:
        for waiter in list(self._waiters):
            if not self._free(key):
                return
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            if key in waiter.keys:
                self._take(key)
                waiter.future.set_result(key)
                self._waiters.remove(waiter)

    def snapshot(self) -> dict[SlotKey, tuple[int, int]]:
        return {k: (self._in_use.get(k, 0), lim) for k, lim in self._limits.items()}


@dataclass(slots=True)
class _BreakerState:
    failures: int = 0
    open_until: float = 0.0


class CircuitBreaker:
    """Skip a provider for a cool-down after ``threshold`` consecutive failures."""

    def __init__(self, *, threshold: int, cooldown_s: float) -> None:
        self._threshold = threshold
        self._cooldown = cooldown_s
        self._states: dict[str, _BreakerState] = {}

    def is_open(self, provider_id: str) -> bool:
        state = self._states.get(provider_id)
        return state is not None and state.open_until > time.monotonic()

    def failure(self, provider_id: str) -> None:
        state = self._states.setdefault(provider_id, _BreakerState())
        state.failures += 1
        if state.failures >= self._threshold:
            state.open_until = time.monotonic() + self._cooldown

    def success(self, provider_id: str) -> None:
        self._states.pop(provider_id, None)

    def state(self, provider_id: str) -> str:
        return "open" if self.is_open(provider_id) else "closed"
