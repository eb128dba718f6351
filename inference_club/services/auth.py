"""Bearer-key authentication served from memory.

A key's row is read at most once per ``key_cache_ttl_s`` (so a revocation made by the
CLI in another process is seen within that time); ``last_used_at`` is collected in
memory and written by the usage recorder, never on the request path.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from inference_club.domain.clock import utcnow
from inference_club.errors import AuthError
from inference_club.services.accounts import hash_key
from inference_club.store import accounts as q
from inference_club.store.db import Database

_NEGATIVE_TTL_S = 1.0
_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user behind a valid key."""

    user_id: str
    username: str
    key_id: str
    is_admin: bool
    routing_preference: str


@dataclass(slots=True)
class _Entry:
    principal: Principal | None
    key_hash: str
    expires: float


class KeyAuthenticator:
    def __init__(self, database: Database, *, ttl_s: float) -> None:
        self._db = database
        self._ttl = ttl_s
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._last_used: dict[str, datetime] = {}
        # One database read per key at a time: concurrent requests share it.
        self._loading: dict[str, asyncio.Future[_Entry]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        raw = _bearer(authorization)
        key_hash = hash_key(raw)
        now = time.monotonic()
        entry = self._cache.get(key_hash)
        if entry is None or entry.expires < now:
            entry = await self._load_once(key_hash, now)
        if entry.principal is None or not hmac.compare_digest(entry.key_hash, key_hash):
            raise AuthError()
        self._last_used[entry.principal.key_id] = utcnow()
        return entry.principal

    async def _load_once(self, key_hash: str, now: float) -> _Entry:
        pending = self._loading.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[key_hash] = future
        try:
            entry = await self._load(key_hash, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved when nobody else waits
            raise
        finally:
            self._loading.pop(key_hash, None)
        future.set_result(entry)
        return entry

    async def _load(self, key_hash: str, now: float) -> _Entry:
        async with self._db.read() as session:
            found = await q.find_key_by_hash(session, key_hash=key_hash)
        principal = None
        if found is not None and found[0].revoked_at is None:
            key, user = found
            principal = Principal(
                user_id=user.id,
                username=user.username,
                key_id=key.id,
                is_admin=user.is_admin,
                routing_preference=user.routing_preference,
            )
        ttl = self._ttl if principal else _NEGATIVE_TTL_S
        entry = _Entry(principal=principal, key_hash=key_hash, expires=now + ttl)
        self._cache[key_hash] = entry
        self._cache.move_to_end(key_hash)
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)
        return entry

    def invalidate(self) -> None:
        self._cache.clear()

    def take_last_used(self) -> dict[str, datetime]:
        """Hand the collected ``last_used_at`` values to the recorder and start afresh."""
        taken, self._last_used = self._last_used, {}
        return taken


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token
