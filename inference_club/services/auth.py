"""Bearer-key authentication served from memory.

A key's row is read at most once per ``key_cache_ttl_s`` (so a revocation made by the
CLI in another process is seen within that time); ``last_used_at`` is collected in
memory and written by the usage recorder, never on the request path.

While the database is unavailable a key verified before keeps working for
``key_cache_grace_s`` after its last check (its row is re-read in the background);
a key never seen answers 503 ``busy``. Nobody can revoke a key meanwhile: the
revocation goes through the same database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from inference_club.domain.clock import utcnow
from inference_club.errors import AuthError, DatabaseUnavailable
from inference_club.services.accounts import hash_key
from inference_club.store import accounts as q
from inference_club.store.db import Database
from inference_club.store.tables import ApiKey, User

log = logging.getLogger("inference_club.auth")

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


def principal_for(key: ApiKey, user: User) -> Principal | None:
    """The one rule of who may use a key: it exists, is not revoked, its user not disabled."""
    if key.revoked_at is not None or user.disabled_at is not None:
        return None
    return Principal(
        user_id=user.id,
        username=user.username,
        key_id=key.id,
        is_admin=user.is_admin,
        routing_preference=user.routing_preference,
    )


@dataclass(slots=True)
class _Entry:
    principal: Principal | None
    key_hash: str
    expires: float


class KeyAuthenticator:
    def __init__(
        self, database: Database, *, ttl_s: float, grace_s: float = 0.0, lookup_wait_s: float | None = None
    ) -> None:
        self._db = database
        self._ttl = ttl_s
        self._grace = grace_s
        self._lookup_wait = lookup_wait_s if lookup_wait_s is not None else database.connect_timeout_s
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._last_used: dict[str, datetime] = {}
        # One database read per key at a time: concurrent requests share it.
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Bumped by every forget: a read that began before it neither refills the cache nor
        # answers requests that arrive after it.
        self._generation = 0

    async def authenticate(self, authorization: str | None) -> Principal:
        raw = _bearer(authorization)
        key_hash = hash_key(raw)
        now = time.monotonic()
        entry = self._cache.get(key_hash)
        if entry is None or entry.expires < now:
            entry = await self._refresh(key_hash, entry, now)
        if entry.principal is None or not hmac.compare_digest(entry.key_hash, key_hash):
            raise AuthError()
        self._last_used[entry.principal.key_id] = utcnow()
        return entry.principal

    async def _refresh(self, key_hash: str, stale: _Entry | None, now: float) -> _Entry:
        within_grace = stale is not None and stale.principal is not None and now < stale.expires + self._grace
        if stale is not None and within_grace and not self._db.health.available:
            # Known outage: answer from memory at once; re-read in the background.
            self._reload_later(key_hash)
            return stale
        try:
            return await self._load_once(key_hash, now)
        except DatabaseUnavailable:
            if stale is not None and within_grace:
                return stale
            raise

    def _reload_later(self, key_hash: str) -> None:
        if key_hash in self._loading:
            return
        task = asyncio.create_task(self._reload_quietly(key_hash), name="key-reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_quietly(self, key_hash: str) -> None:
        try:
            await self._load_once(key_hash, time.monotonic())
        except DatabaseUnavailable:
            pass  # the outage is logged once by the database
        except Exception:  # pragma: no cover - a bug must not go unnoticed in a task
            log.exception("background key reload failed")

    async def _load_once(self, key_hash: str, now: float) -> _Entry:
        """Read the key's row, at most ``lookup_wait_s``: a hung database is not waited for.

        The read runs as a task shared by concurrent requests for the same key; when a
        request stops waiting the read goes on (bounded by the database timeouts) and fills
        the cache, instead of being cancelled mid-statement.
        """
        loading = self._loading.get(key_hash)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key_hash, now))
            self._loading[key_hash] = loading
            loading.add_done_callback(lambda done: self._loaded(key_hash, done))
        try:
            async with asyncio.timeout(self._lookup_wait):
                return await asyncio.shield(loading)
        except TimeoutError:
            raise self._db.health.unavailable_error() from None

    def _loaded(self, key_hash: str, done: asyncio.Future[_Entry]) -> None:
        if self._loading.get(key_hash) is done:
            del self._loading[key_hash]
        if not done.cancelled():
            done.exception()  # retrieved here when nobody waits any more

    async def _load(self, key_hash: str, now: float) -> _Entry:
        generation = self._generation
        async with self._db.read() as session:
            found = await q.find_key_by_hash(session, key_hash=key_hash)
        principal = principal_for(*found) if found is not None else None
        ttl = self._ttl if principal else _NEGATIVE_TTL_S
        entry = _Entry(principal=principal, key_hash=key_hash, expires=now + ttl)
        if generation != self._generation:
            return entry  # the key may have been revoked while this read ran
        self._cache[key_hash] = entry
        self._cache.move_to_end(key_hash)
        while len(self._cache) > _MAX_ENTRIES:
            self._cache.popitem(last=False)
        return entry

    def invalidate(self) -> None:
        self._generation += 1
        self._loading.clear()
        self._cache.clear()

    def forget_key(self, key_id: str) -> None:
        """Drop a key from memory at once (it was revoked): its next use reads the database."""
        self._generation += 1
        self._loading.clear()
        for key_hash, entry in list(self._cache.items()):
            if entry.principal is not None and entry.principal.key_id == key_id:
                del self._cache[key_hash]

    async def usable_key_ids(self, key_ids: set[str]) -> set[str]:
        """Which of ``key_ids`` may still be used, read from the database now."""
        async with self._db.read() as session:
            found = await q.find_keys_by_id(session, key_ids=key_ids)
        return {key.id for key, user in found if principal_for(key, user) is not None}

    def take_last_used(self) -> dict[str, datetime]:
        """Hand the collected ``last_used_at`` values to the recorder and start afresh."""
        taken, self._last_used = self._last_used, {}
        return taken

    def give_back_last_used(self, last_used: dict[str, datetime]) -> None:
        """The recorder could not write them: keep them for its next flush (newer values win)."""
        for key_id, at in last_used.items():
            current = self._last_used.get(key_id)
            if current is None or current < at:
                self._last_used[key_id] = at


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token
