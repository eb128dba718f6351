"""Provider presence shared by the replicas: every replica's registry sees every provider.

A replica that accepts a heartbeat (or holds a provider's tunnels) writes the provider's
state to ``ic:presence:<provider>:<replica>`` with a TTL and publishes it; the other
replicas apply it to their in-memory :class:`~inference_club.services.registry.ProviderRegistry`,
which routing keeps reading synchronously. A heartbeat record lives for the online window
(its ``last_seen`` decides online-ness anyway); a tunnel record lives a few seconds and is
renewed by the replica holding the tunnels, so a dead replica's tunnels vanish from every
snapshot once it expires. The sorted set ``ic:presence:index`` lists the live records
(member ``<provider> <replica>``, score = expiry on the Redis clock).

No secret goes through Redis: a replica learning of a provider it does not know reads its
row (agent secret included) from the shared database. Redis down: heartbeats still work
(the database has them); this replica's records are written again, and the others' read
again, once Redis is back.

Presence and the tunnel directory must agree: a replica that routes to a provider because
presence shows its tunnels elsewhere relays through the directory. So a tunnel record is
written only after :attr:`Presence.claim_tunnels` (the directory's claims, with this
replica's URL) succeeded in the same pass. Each replica keeps a marker key of its own;
when the marker is gone, Redis lost its data (restart, flush): the replica re-claims and
rewrites everything at once, and keeps the other replicas' records it knew for one
tunnel-record lifetime while they write theirs again, instead of dropping them as expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.commands.core import AsyncScript

from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.subscription import Subscription
from inference_club.domain.providers import ProviderState, ServiceDecl, ServiceInfo
from inference_club.errors import DatabaseUnavailable, SharedStateUnavailable
from inference_club.services.registry import ProviderRegistry
from inference_club.waiting import cancel_and_wait, wait_event

log = logging.getLogger("inference_club.cluster")

INDEX = "ic:presence:index"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: record key, index. ARGV: record, ttl ms, index member, channel.
_PUT = (
    _NOW
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""
)

# KEYS: index, then the record keys. ARGV: ttl ms, then the records' index members, in the
# same order. One renewal for all of a replica's tunnel records; returns the positions
# (1-based) of the records that are gone (rewrite them).
_TOUCH = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
local gone = {}
for i = 2, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ttl) == 0 then
    gone[#gone + 1] = i - 1
  else
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  end
end
return gone
"""
)

# KEYS: record key, index. ARGV: index member, channel, goodbye message.
_DROP = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: index, this replica's marker. ARGV: key prefix, 'full' | 'members', marker ttl ms.
# {lost, items}: lost is 1 when the marker was gone (Redis lost its data; the marker is
# written again); items are the live members, or with 'full' their records.
_LIST = (
    _NOW
    + """
local lost = 1 - redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if ARGV[2] ~= 'full' then return {lost, members} end
local out = {}
for _, member in ipairs(members) do
  local space = string.find(member, ' ', 1, true)
  local record = redis.call('GET', ARGV[1] .. string.sub(member, 1, space - 1) .. ':' .. string.sub(member, space + 1))
  if record then out[#out + 1] = record end
end
return {lost, out}
"""
)


@dataclass(frozen=True, slots=True)
class _Record:
    """One replica's word on one provider."""

    provider_id: str
    replica: str
    last_seen: float
    tunnels: int
    data: dict[str, Any]


def presence_channel(link: RedisLink) -> str:
    return f"ic:presence:events:{link.client.connection_pool.connection_kwargs.get('db', 0)}"


MARKER_TTL_MS = 60_000


def marker_key(replica_id: str) -> str:
    """Rewritten by the replica on every pass: its absence means Redis lost its data."""
    return f"ic:presence:marker:{replica_id}"


class Presence:
    def __init__(
        self,
        link: RedisLink,
        registry: ProviderRegistry,
        *,
        replica_id: str,
        online_window_s: float,
        refresh_s: float = 1.0,
        tunnel_ttl_s: float = 5.0,
        full_sync_s: float = 30.0,
    ) -> None:
        self._link = link
        self._registry = registry
        self.replica_id = replica_id
        self._window_ms = max(1000, math.ceil(online_window_s * 1000))
        self._refresh_s = refresh_s
        self._tunnel_ttl_ms = max(1000, int(tunnel_ttl_s * 1000))
        self._full_sync_s = full_sync_s
        self._channel = presence_channel(link)
        self._dirty: set[str] = set()
        self._heard: dict[str, float] = {}  # provider id → monotonic time of our last heartbeat for it
        self._published_tunnels: dict[str, int] = {}
        self._remote: dict[tuple[str, str], _Record] = {}
        self._unknown: dict[str, dict[str, _Record]] = {}  # records of providers not in the snapshot yet
        self._wake = asyncio.Event()
        self._resync = True
        self._keep_missing_until = 0.0  # monotonic: records missing from Redis are kept until then
        self._marked = False  # this replica's marker was written once
        self._task: asyncio.Task[None] | None = None
        self.claim_tunnels: Callable[[], Awaitable[None]] | None = None
        """Claims this replica's tunnels in the tunnel directory; awaited before tunnel records
        are written (raises when it could not)."""
        client = link.client
        self._put: AsyncScript = client.register_script(_PUT)
        self._touch: AsyncScript = client.register_script(_TOUCH)
        self._drop: AsyncScript = client.register_script(_DROP)
        self._list: AsyncScript = client.register_script(_LIST)
        self._subscription = Subscription(
            link, [self._channel], self._on_message, on_connected=self._on_connected, name="presence-events"
        )
        registry.on_local_update(self._heard_from)

    def __repr__(self) -> str:
        return f"<Presence {self.replica_id} remote={len(self._remote)} {self._subscription!r}>"

    async def start(self) -> None:
        self._subscription.start()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="presence")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._subscription.stop()
        # Tunnels close with this process: tell the others now rather than at expiry.
        with contextlib.suppress(SharedStateUnavailable):
            for provider_id, count in list(self._published_tunnels.items()):
                if count:
                    await self._withdraw(provider_id)
            async with self._link.call() as r:
                await r.delete(marker_key(self.replica_id))

    # Publishing ---------------------------------------------------------------------------

    def _heard_from(self, state: ProviderState) -> None:
        self._heard[state.id] = time.monotonic()
        self._dirty.add(state.id)
        self._wake.set()

    def _key(self, provider_id: str) -> str:
        return f"ic:presence:{provider_id}:{self.replica_id}"

    def _member(self, provider_id: str) -> str:
        return f"{provider_id} {self.replica_id}"

    def _record(self, state: ProviderState) -> bytes:
        return orjson.dumps(
            {
                "id": state.id,
                "replica": self.replica_id,
                "user_id": state.user_id,
                "name": state.name,
                "transport": state.transport,
                "callback_url": state.callback_url,
                "visibility": state.visibility,
                "services": [s.to_json() for s in state.services],
                "version": state.version,
                "health": state.health,
                "last_seen": state.last_seen,
                "key_id": state.key_id,
                "tunnels": state.tunnels,
            }
        )

    async def _publish(self, state: ProviderState) -> None:
        ttl = self._tunnel_ttl_ms if state.transport == "tunnel" else self._window_ms
        async with self._link.call() as r:
            await self._put(
                keys=[self._key(state.id), INDEX],
                args=[self._record(state), ttl, self._member(state.id), self._channel],
                client=r,
            )
        self._published_tunnels[state.id] = state.tunnels if state.transport == "tunnel" else 0

    async def _withdraw(self, provider_id: str) -> None:
        goodbye = orjson.dumps({"id": provider_id, "replica": self.replica_id, "gone": True})
        async with self._link.call() as r:
            await self._drop(
                keys=[self._key(provider_id), INDEX],
                args=[self._member(provider_id), self._channel, goodbye],
                client=r,
            )
        self._published_tunnels.pop(provider_id, None)

    def _local(self) -> list[ProviderState]:
        """Providers this replica speaks for: recent heartbeats here, or tunnels here."""
        horizon = time.monotonic() - self._window_ms / 1000
        local = []
        for provider_id, heard in list(self._heard.items()):
            state = self._registry.get(provider_id)
            if state is None or (heard < horizon and not state.tunnels):
                self._heard.pop(provider_id, None)
                continue
            local.append(state)
        return local

    async def publish_changes(self) -> None:
        """Write what changed here: heartbeats, tunnels opened or closed; renew tunnel records."""
        for provider_id, count in list(self._published_tunnels.items()):
            state = self._registry.get(provider_id)
            if count and (state is None or state.tunnels == 0):
                await self._withdraw(provider_id)
        changed: list[ProviderState] = []
        renewed: list[ProviderState] = []
        for state in self._local():
            if state.transport != "tunnel":
                if state.id in self._dirty:
                    self._dirty.discard(state.id)
                    await self._publish(state)
                continue
            published = self._published_tunnels.get(state.id, 0)
            if state.tunnels == 0:
                self._dirty.discard(state.id)  # withdrawn above, or never published
            elif state.id in self._dirty or state.tunnels != published:
                changed.append(state)
            else:
                renewed.append(state)
        changed += await self._renew(renewed)  # the ones Redis lost (restart): write them again
        await self._publish_tunnels(changed)
        self._dirty.clear()

    async def _renew(self, states: list[ProviderState]) -> list[ProviderState]:
        """Extend these tunnel records in one round trip; the ones that are gone."""
        if not states:
            return []
        async with self._link.call() as r:
            gone = await self._touch(
                keys=[INDEX, *(self._key(s.id) for s in states)],
                args=[self._tunnel_ttl_ms, *(self._member(s.id) for s in states)],
                client=r,
            )
        return [states[int(i) - 1] for i in gone]

    async def _publish_tunnels(self, states: list[ProviderState]) -> None:
        """Write tunnel records, after the directory lists this replica as their holder."""
        if not states:
            return
        if self.claim_tunnels is not None:
            await self.claim_tunnels()
        for state in states:
            self._dirty.discard(state.id)
            await self._publish(state)

    async def republish(self) -> None:
        local = self._local()
        await self._publish_tunnels([s for s in local if s.transport == "tunnel" and s.tunnels])
        for state in local:
            if state.transport != "tunnel":
                await self._publish(state)

    # Reading ------------------------------------------------------------------------------

    async def _on_connected(self) -> None:
        self._resync = True
        self._wake.set()

    async def _read(self, mode: str) -> list[bytes]:
        async with self._link.call() as r:
            lost, items = await self._list(
                keys=[INDEX, marker_key(self.replica_id)],
                args=["ic:presence:", mode, MARKER_TTL_MS],
                client=r,
            )
        if lost and self._marked:
            self._lost_data()
        self._marked = True
        return list(items)

    def _lost_data(self) -> None:
        """Redis came back empty: write everything again now, and give the other replicas
        one tunnel-record lifetime to do the same before their records count as expired."""
        log.info("presence: Redis lost its data; writing this replica's records and claims again")
        self._keep_missing_until = time.monotonic() + self._tunnel_ttl_ms / 1000
        self._published_tunnels.clear()  # this pass's publish_changes writes them all again
        self._dirty.update(s.id for s in self._local())

    async def sync(self) -> None:
        """Read every live record (after a (re)connect: events may have been missed)."""
        seen: set[tuple[str, str]] = set()
        for data in await self._read("full"):
            record = _parse(data)
            if record is not None and record.replica != self.replica_id:
                seen.add((record.provider_id, record.replica))
                await self._apply(record)
        self._forget_missing(seen)

    async def expire(self) -> None:
        """Forget the records that expired (their replica stopped renewing them)."""
        live = set()
        for member in await self._read("members"):
            provider_id, _, replica = member.decode().partition(" ")
            live.add((provider_id, replica))
        self._forget_missing(live)

    def _forget_missing(self, live: set[tuple[str, str]]) -> None:
        if time.monotonic() < self._keep_missing_until:
            return  # Redis lost them: their replicas are writing them again
        for gone in [k for k in self._remote if k not in live]:
            self._forget(*gone)

    def _on_message(self, _channel: str, data: bytes) -> None:
        message = orjson.loads(data)
        if message.get("replica") == self.replica_id:
            return
        if message.get("gone"):
            self._forget(str(message["id"]), str(message["replica"]))
            return
        record = _parse(data)
        if record is not None:
            if self._registry.get(record.provider_id) is None:
                self._unknown.setdefault(record.provider_id, {})[record.replica] = record
                self._wake.set()
            else:
                self._apply_known(record)

    async def _apply(self, record: _Record) -> None:
        if self._registry.get(record.provider_id) is None:
            try:
                adopted = await self._registry.adopt(record.provider_id)
            except DatabaseUnavailable:
                adopted = None
            if adopted is None:
                self._unknown.setdefault(record.provider_id, {})[record.replica] = record
                return
        self._apply_known(record)

    async def _adopt_unknown(self) -> None:
        for provider_id in list(self._unknown):
            records = self._unknown.pop(provider_id)
            for record in records.values():
                await self._apply(record)

    def _apply_known(self, record: _Record) -> None:
        state = self._registry.get(record.provider_id)
        if state is None:
            return
        self._remote[(record.provider_id, record.replica)] = record
        # The newest heartbeat wins; an equal one is the same heartbeat, re-sent with a change
        # made since (visibility).
        if record.last_seen >= state.last_seen:
            data = record.data
            state.transport = str(data["transport"])
            state.callback_url = data.get("callback_url")
            state.visibility = str(data.get("visibility") or state.visibility)
            state.services = [
                ServiceInfo.from_decl(i, ServiceDecl.model_validate(s))
                for i, s in enumerate(data.get("services") or [])
            ]
            state.version = data.get("version")
            state.health = dict(data.get("health") or {})
            state.last_seen = record.last_seen
            state.key_id = data.get("key_id")
        self._count_tunnels(state)
        self._registry.changed(state)

    def _forget(self, provider_id: str, replica: str) -> None:
        if self._remote.pop((provider_id, replica), None) is None:
            return
        state = self._registry.get(provider_id)
        if state is not None:
            self._count_tunnels(state)
            self._registry.changed(state)

    def _count_tunnels(self, state: ProviderState) -> None:
        state.remote_tunnels = {
            replica: record.tunnels
            for (provider_id, replica), record in self._remote.items()
            if provider_id == state.id and record.tunnels > 0
        }

    # The loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        next_full = 0.0
        reported = False
        while True:
            await wait_event(self._wake, self._refresh_s)
            self._wake.clear()
            try:
                if self._resync or time.monotonic() >= next_full:
                    resync = self._resync
                    self._resync = False
                    await self.sync()
                    if resync:
                        await self.republish()
                    next_full = time.monotonic() + self._full_sync_s
                else:
                    await self.expire()
                await self.publish_changes()
                await self._adopt_unknown()
                if reported:
                    log.info("presence: Redis is back")
                    reported = False
            except SharedStateUnavailable:
                self._resync = True  # whatever happened meanwhile is read and written again
                if not reported:
                    log.warning(
                        "presence: Redis unavailable; other replicas will not see changes here until it is back"
                    )
                    reported = True
            except Exception:  # pragma: no cover - keep the loop alive on a bug
                log.exception("presence loop failed")


def _parse(data: bytes) -> _Record | None:
    try:
        message = orjson.loads(data)
        return _Record(
            provider_id=str(message["id"]),
            replica=str(message["replica"]),
            last_seen=float(message.get("last_seen") or 0.0),
            tunnels=int(message.get("tunnels") or 0),
            data=message,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("presence: ignored a malformed record")
        return None
