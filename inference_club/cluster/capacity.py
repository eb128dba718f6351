"""Capacity slots shared by every replica: leases in Redis, taken and freed by Lua scripts.

The same contract as the in-process :class:`~inference_club.services.capacity.Capacity`:
a request holds one of its service's ``max_concurrency`` slots while it runs; synchronous
requests queue first come first served (one queue per slot in Redis, across replicas);
background work only takes a slot nobody queues for.

A slot is a lease with an expiry that this replica renews while the request runs, so a
replica killed mid-request frees its slots after ``lease_ttl_s``. Waiters wake on the
release events published by the scripts, and poll every ``poll_s`` in case an event was
lost. :meth:`load` answers from a local count kept current by those events (routing
reads it synchronously). When Redis is down, taking a slot raises
:class:`~inference_club.errors.SharedStateUnavailable` (503 ``busy``); releasing never
fails (an unreleased lease expires by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from inference_club.cluster import slot_scripts
from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.subscription import Subscription
from inference_club.domain.routing import SlotKey
from inference_club.errors import SharedStateUnavailable
from inference_club.waiting import cancel_and_wait, wait_event

log = logging.getLogger("inference_club.cluster")


def events_channel(link: RedisLink) -> str:
    """Pub/sub ignores database numbers: clusters sharing a Redis server on different DBs stay apart."""
    return f"ic:slots:events:{link.client.connection_pool.connection_kwargs.get('db', 0)}"


def _base(key: SlotKey) -> str:
    return f"ic:slot:{{{key[0]}:{key[1]}}}"


def _event_name(key: SlotKey) -> str:
    return f"{key[0]} {key[1]}"


@dataclass(slots=True, eq=False)
class _Waiter:
    id: str
    keys: tuple[SlotKey, ...]
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RedisCapacity:
    def __init__(
        self,
        link: RedisLink,
        *,
        lease_ttl_s: float = 6.0,
        poll_s: float = 1.0,
        channel: str | None = None,
        max_calls: int = 64,
    ) -> None:
        self._link = link
        self._lease_ttl_ms = max(1, int(lease_ttl_s * 1000))
        self._waiter_ttl_ms = max(3000, int(poll_s * 3000))
        self._poll_s = poll_s
        self._channel = channel or events_channel(link)
        self._limits: dict[SlotKey, int] = {}
        self._loads: dict[SlotKey, int] = {}
        self._held: dict[SlotKey, list[str]] = {}
        self._unleased: dict[SlotKey, int] = {}  # running requests whose lease was lost
        self._waiters: list[_Waiter] = []
        self._listeners: list[Callable[[SlotKey], None]] = []
        self._cleanup: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        # Bounds this replica's Redis connections: a burst of requests shares a few of them.
        self._calls = asyncio.Semaphore(max_calls)
        self._link_timeout_s = 1.0
        # A queue for a call only means Redis trouble when calls are failing: a busy replica
        # waits longer for its turn, a replica whose last call failed gives up at once.
        self._queue_timeout_s = 10.0
        self._failing_until = 0.0
        client = link.client
        self._acquire_script: AsyncScript = client.register_script(slot_scripts.ACQUIRE)
        self._release_script: AsyncScript = client.register_script(slot_scripts.RELEASE)
        self._leave_script: AsyncScript = client.register_script(slot_scripts.LEAVE)
        self._renew_script: AsyncScript = client.register_script(slot_scripts.RENEW)
        self._count_script: AsyncScript = client.register_script(slot_scripts.COUNT)
        self._subscription = Subscription(
            link, [self._channel], self._on_event, on_connected=self.refresh_loads, name="capacity-events"
        )

    def __repr__(self) -> str:
        held = sum(len(v) for v in self._held.values())
        return f"<RedisCapacity held={held} waiters={len(self._waiters)} {self._subscription!r}>"

    # Life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._subscription.start()
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="capacity-leases")

    async def stop(self) -> None:
        if self._renewer is not None:
            await cancel_and_wait(self._renewer)
            self._renewer = None
        for key, leases in list(self._held.items()):
            for lease in leases:
                self._spawn(self._drop_lease([key], lease))
        self._held.clear()
        if self._cleanup:
            await asyncio.wait(list(self._cleanup), timeout=2.0)
        await self._subscription.stop()

    # The Capacity contract ---------------------------------------------------------------

    def load(self, key: SlotKey) -> int:
        return self._loads.get(key, 0)

    def set_limit(self, key: SlotKey, limit: int) -> None:
        previous = self._limits.get(key)
        self._limits[key] = limit
        if previous is not None and limit > previous:
            self._wake(key, limit - previous)

    def snapshot(self) -> dict[SlotKey, tuple[int, int]]:
        return {k: (self._loads.get(k, 0), lim) for k, lim in self._limits.items()}

    def has_waiters(self) -> bool:
        return bool(self._waiters)

    @property
    def waiting(self) -> int:
        """Synchronous requests of this replica waiting for a slot right now."""
        return len(self._waiters)

    def on_release(self, listener: Callable[[SlotKey], None]) -> None:
        """Called when a slot frees on any replica (the job dispatcher wakes on it)."""
        self._listeners.append(listener)

    async def take(self, keys: Sequence[SlotKey], *, background: bool = False) -> SlotKey | None:
        """Take the first free slot among ``keys`` without waiting.

        ``background`` work never takes a slot a synchronous request queues for.
        """
        if not keys:
            return None
        lease = secrets.token_hex(8)
        return await self._try(keys, lease, "", "bg" if background else "now")

    async def acquire(self, keys: Sequence[SlotKey], *, timeout_s: float) -> SlotKey | None:
        """Take a slot, queueing FIFO across replicas up to ``timeout_s``; ``None`` on timeout."""
        if not keys:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiter = _Waiter(secrets.token_hex(8), tuple(keys))
        lease = secrets.token_hex(8)
        self._waiters.append(waiter)
        got: SlotKey | None = None
        try:
            while True:
                waiter.wake.clear()  # before the call: a wake-up during it means "try again"
                got = await self._try(waiter.keys, lease, waiter.id, "wait")
                if got is not None:
                    return got
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await wait_event(waiter.wake, min(remaining, self._poll_s))
        finally:
            self._waiters.remove(waiter)
            if got is None:
                self._spawn(self._leave(waiter))

    def release(self, key: SlotKey) -> None:
        if self._unleased.get(key, 0) > 0:
            self._unleased[key] -= 1
        else:
            leases = self._held.get(key)
            if leases:
                lease = leases.pop()
                if not leases:
                    del self._held[key]
                self._spawn(self._drop_lease([key], lease))
        for listener in self._listeners:
            listener(key)

    # Redis calls -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _redis(self) -> AsyncIterator[aioredis.Redis]:
        """One Redis call; a hung Redis fails the queue behind it fast too (503, not a wait)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._failing_until:
            raise SharedStateUnavailable()
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._calls.acquire()
        except TimeoutError:
            raise SharedStateUnavailable() from None
        try:
            if loop.time() < self._failing_until:  # failed while this call queued
                raise SharedStateUnavailable()
            async with self._link.call() as r:
                yield r
        except SharedStateUnavailable:
            self._failing_until = loop.time() + self._link_timeout_s
            raise
        finally:
            self._calls.release()

    async def _try(self, keys: Sequence[SlotKey], lease: str, waiter: str, mode: str) -> SlotKey | None:
        redis_keys: list[str] = []
        for key in keys:
            base = _base(key)
            redis_keys += [f"{base}:leases", f"{base}:wait", f"{base}:wexp"]
        # mode: 'wait' queues when refused, 'bg' yields to any queued waiter, 'now' neither.
        args: list[str | int] = [lease, self._lease_ttl_ms, waiter, self._waiter_ttl_ms, mode, self._channel]
        args += [self._limits.get(k, 1) for k in keys]
        args += [_event_name(k) for k in keys]
        try:
            async with self._redis() as r:
                index = int(await self._acquire_script(keys=redis_keys, args=args, client=r))
        except BaseException:
            # The script may have run without us seeing its answer: drop the lease if it exists.
            self._spawn(self._drop_lease(keys, lease))
            raise
        if index == 0:
            return None
        key = keys[index - 1]
        self._held.setdefault(key, []).append(lease)
        self._loads[key] = max(self._loads.get(key, 0), 1)
        return key

    def _slot_keys(self, keys: Sequence[SlotKey]) -> tuple[list[str], list[str | int]]:
        """The (leases, wait, wexp) Redis keys and the (event name, limit) arguments of ``keys``."""
        redis_keys: list[str] = []
        args: list[str | int] = []
        for key in keys:
            base = _base(key)
            redis_keys += [f"{base}:leases", f"{base}:wait", f"{base}:wexp"]
            args += [_event_name(key), self._limits.get(key, 1)]
        return redis_keys, args

    async def _drop_lease(self, keys: Sequence[SlotKey], lease: str) -> None:
        redis_keys, args = self._slot_keys(keys)
        with contextlib.suppress(SharedStateUnavailable):  # the lease expires by itself
            async with self._redis() as r:
                await self._release_script(keys=redis_keys, args=[lease, self._channel, *args], client=r)

    async def _leave(self, waiter: _Waiter) -> None:
        redis_keys, args = self._slot_keys(waiter.keys)
        with contextlib.suppress(SharedStateUnavailable):  # the queue entry expires by itself
            async with self._redis() as r:
                await self._leave_script(keys=redis_keys, args=[waiter.id, self._channel, *args], client=r)

    async def renew(self) -> None:
        """Extend every lease this replica holds; re-take the ones that expired meanwhile."""
        held = [(key, lease) for key, leases in self._held.items() for lease in leases]
        if not held:
            return
        args: list[str | int] = [self._lease_ttl_ms]
        for key, lease in held:
            args += [lease, self._limits.get(key, 1)]
        async with self._redis() as r:
            results = await self._renew_script(
                keys=[f"{_base(k)}:leases" for k, _ in held], args=args, client=r
            )
        for (key, lease), status in zip(held, results, strict=True):
            if int(status) == 0 and lease in self._held.get(key, []):
                # The slot filled up while Redis did not hear from us: run on without a lease.
                self._held[key].remove(lease)
                if not self._held[key]:
                    del self._held[key]
                self._unleased[key] = self._unleased.get(key, 0) + 1
                log.warning("capacity lease for %s expired and the slot is taken; running on without it", key)

    async def refresh_loads(self) -> None:
        """Read the live counts of every known slot (after a reconnect, and as a fallback)."""
        keys = list(self._limits)
        if not keys:
            return
        async with self._redis() as r:
            counts = await self._count_script(keys=[f"{_base(k)}:leases" for k in keys], client=r)
        for key, count in zip(keys, counts, strict=True):
            self._set_load(key, int(count))

    async def _renew_loop(self) -> None:
        interval = self._lease_ttl_ms / 3000
        reported = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
                await self.refresh_loads()
                if reported:
                    log.info("capacity leases renewed again")
                    reported = False
            except SharedStateUnavailable:
                if not reported:
                    log.warning("cannot renew capacity leases: Redis unavailable")
                    reported = True

    # Events ------------------------------------------------------------------------------

    def _on_event(self, _channel: str, data: bytes) -> None:
        provider, index, count, *heads = data.decode().split(" ")
        key = (provider, int(index))
        if heads:
            for waiter in self._waiters:
                if waiter.id in heads:
                    waiter.wake.set()
        self._set_load(key, int(count), wake=not heads)

    def _set_load(self, key: SlotKey, count: int, *, wake: bool = True) -> None:
        previous = self._loads.get(key)
        self._loads[key] = count
        limit = self._limits.get(key, 1)
        if count < limit:
            if wake:
                self._wake(key, limit - count)
            if previous is None or count < previous:
                for listener in self._listeners:
                    listener(key)

    def _wake(self, key: SlotKey, free: int) -> None:
        # The oldest local waiters first; the Redis queue decides who really gets it.
        for waiter in self._waiters:
            if free <= 0:
                return
            if key in waiter.keys:
                waiter.wake.set()
                free -= 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)
