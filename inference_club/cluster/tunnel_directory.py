"""Where each provider's agent tunnels are: which replicas hold them, and how to reach those.

Two kinds of Redis keys, both expiring unless refreshed, so a replica that dies leaves
nothing behind for longer than the TTL:

- ``ic:tunnels:<provider id>``: a sorted set of the replica ids holding a tunnel of the
  provider, each scored with the time (Redis' clock, milliseconds) its claim runs out.
  Several replicas may hold one provider (several agent processes with the same name).
- ``ic:replica:<replica id>:url``: the replica's internal base URL.

A replica claims a provider when it starts holding a routable tunnel of it, releases it
when its last one closes or drains, and re-claims everything it holds, with its URL,
every third of the TTL. Every claim writes the URL with it, so a claim is never
invisible for want of an address. A claim that fails (Redis down) is redone by that
refresh, and sooner by :meth:`TunnelDirectory.claim_all`, which the provider presence
calls before it (re)writes tunnel records: a replica never tells the others it holds a
tunnel before the directory says so. A release that fails runs out with the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.waiting import cancel_and_wait

log = logging.getLogger("inference_club.cluster")

DEFAULT_TTL_S = 15.0

# KEYS: one tunnels key per provider; ARGV: replica id, TTL in ms, and (when advertising
# with the claims) the replica's URL key and URL.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] then redis.call('SET', ARGV[3], ARGV[4], 'PX', ttl) end
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
"""

# KEYS: the provider's tunnels key. The replicas whose claim has not run out.
_HOLDERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


def tunnels_key(provider_id: str) -> str:
    return f"ic:tunnels:{provider_id}"


def replica_url_key(replica_id: str) -> str:
    return f"ic:replica:{replica_id}:url"


@dataclass(frozen=True, slots=True)
class Holder:
    """A replica holding a tunnel of the provider, and its internal base URL."""

    replica_id: str
    url: str


class TunnelDirectory:
    def __init__(
        self,
        link: RedisLink,
        *,
        replica_id: str,
        internal_url: str,
        held: Callable[[], Iterable[str]] | None = None,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self._link = link
        self.replica_id = replica_id
        self.internal_url = internal_url
        self.ttl_s = ttl_s
        self._held: set[str] = set()
        self._held_source = held
        """Lists the providers this replica holds (the refresh re-reads it: the truth)."""
        self._writes: set[asyncio.Task[None]] = set()
        self._in_order = asyncio.Lock()  # a release must not overtake the claim before it
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False

    def __repr__(self) -> str:
        return f"<TunnelDirectory {self.replica_id} at {self.internal_url} holds={len(self._held)}>"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    # ------------------------------------------------------------------ this replica's claims

    def holding(self, provider_id: str, holds: bool) -> None:
        """This replica starts (``holds``) or stops holding a routable tunnel of ``provider_id``."""
        if self._stopped or holds == (provider_id in self._held):
            return
        if holds:
            self._held.add(provider_id)
            write = self.claim([provider_id], advertise=True)
        else:
            self._held.discard(provider_id)
            write = self.release(provider_id)
        task = asyncio.create_task(self._in_turn(write), name=f"tunnel-directory-{provider_id}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def settled(self) -> None:
        """Wait for the claims and releases already under way."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def claim(self, provider_ids: Iterable[str], *, advertise: bool = False) -> None:
        """Claim ``provider_ids`` (and with ``advertise``, write this replica's URL too), at once."""
        keys = [tunnels_key(pid) for pid in provider_ids]
        url = [replica_url_key(self.replica_id), self.internal_url] if advertise else []
        if not keys and not url:
            return
        async with self._link.call() as redis:
            await redis.eval(_CLAIM, len(keys), *keys, self.replica_id, self._ttl_ms, *url)

    async def release(self, provider_id: str) -> None:
        async with self._link.call() as redis:
            await redis.zrem(tunnels_key(provider_id), self.replica_id)

    async def advertise(self) -> None:
        async with self._link.call() as redis:
            await redis.set(replica_url_key(self.replica_id), self.internal_url, px=self._ttl_ms)

    async def refresh(self) -> None:
        """Advertise this replica's URL, re-claim every provider it holds, drop the others."""
        dropped: set[str] = set()
        if self._held_source is not None:
            held = set(self._held_source())
            dropped, self._held = self._held - held, held
        await self.claim(sorted(self._held), advertise=True)
        for provider_id in sorted(dropped):
            await self.release(provider_id)

    async def claim_all(self) -> None:
        """Re-claim everything held here, with the URL, now (in turn with the other writes).

        Unlike the background writes, a failure is raised: the caller (presence) must not
        announce tunnels the directory does not list.
        """
        if self._stopped:
            return
        async with self._in_order:
            await self.refresh()

    # ------------------------------------------------------------------ looking up

    async def holders(self, provider_id: str) -> list[Holder]:
        """The other replicas holding a tunnel of ``provider_id`` and reachable by URL.

        Raises :class:`SharedStateUnavailable` when Redis cannot be asked.
        """
        async with self._link.call() as redis:
            raw_ids = await redis.eval(_HOLDERS, 1, tunnels_key(provider_id))
            ids = [_text(i) for i in raw_ids]
            ids = [i for i in ids if i != self.replica_id]
            if not ids:
                return []
            urls = await redis.mget([replica_url_key(i) for i in ids])
        return [Holder(rid, _text(url)) for rid, url in zip(ids, urls, strict=True) if url]

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Advertise now, then refresh every third of the TTL."""
        self._task = asyncio.create_task(self._run(), name="tunnel-directory")

    async def stop(self) -> None:
        """Forget this replica's claims and URL (the other replicas stop relaying here)."""
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.settled()
        with contextlib.suppress(SharedStateUnavailable):
            async with self._link.call() as redis:
                async with redis.pipeline(transaction=False) as pipe:
                    for provider_id in self._held:
                        pipe.zrem(tunnels_key(provider_id), self.replica_id)
                    pipe.delete(replica_url_key(self.replica_id))
                    await pipe.execute()
        self._held.clear()

    async def _run(self) -> None:
        while True:
            await self._in_turn(self.refresh())
            await asyncio.sleep(self.ttl_s / 3)

    async def _in_turn(self, write: Coroutine[Any, Any, None]) -> None:
        async with self._in_order:
            await self._quietly(write)

    async def _quietly(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a directory write; Redis trouble is logged once per outage (the refresh redoes it)."""
        try:
            await write
        except SharedStateUnavailable:
            if not self._failing:
                log.warning("tunnel directory: Redis is unavailable; retrying every %gs", self.ttl_s / 3)
            self._failing = True
            return
        except Exception:  # pragma: no cover - a bug must not end the refresh loop
            log.exception("tunnel directory write failed")
            return
        if self._failing:
            log.info("tunnel directory: Redis is back")
        self._failing = False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
