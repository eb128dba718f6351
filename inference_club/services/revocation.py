"""Revoked keys lose their live connections: the key watch.

A key can be revoked by another process (``inference-club keys revoke`` on the same
database), so the hub cannot wait to be told. Every half key-cache TTL this loop reads,
in one query, the keys behind open tunnels and recently heartbeating direct providers;
for each key that may no longer be used it closes the key's tunnels (``GOAWAY
unauthorized``, close code 4401), takes its direct providers offline and drops the key
from the authentication cache, so the agent's reconnects are refused. Requests never
wait for it: the request path stays a memory lookup.

Loop shape: poll (collect live keys) → check (one read) → act (close, drop) → sleep.
``check`` is the burst mode: tests and in-process revocations call it directly.

With ``IC_REDIS_URL`` the other replicas are told at once (see
:mod:`inference_club.cluster.revocation`): ``key_revoked`` and ``user_changed`` call the
announcers registered with ``on_announce``; the polling stays as the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from inference_club.errors import DatabaseUnavailable
from inference_club.services.auth import KeyAuthenticator
from inference_club.services.registry import ProviderRegistry
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.waiting import cancel_and_wait

log = logging.getLogger("inference_club.revocation")

#: What changed: one key was revoked, or a user was disabled or enabled (all their keys).
Subject = Literal["key", "user"]


@dataclass(frozen=True, slots=True)
class Revoked:
    key_id: str
    tunnels_closed: int
    providers_offline: list[str]


class KeyWatch:
    def __init__(
        self,
        auth: KeyAuthenticator,
        registry: ProviderRegistry,
        tunnels: TunnelServer | None,
        *,
        interval_s: float,
    ) -> None:
        self._auth = auth
        self._registry = registry
        self._tunnels = tunnels
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._soon: asyncio.Task[None] | None = None
        self._announcers: list[Callable[[Subject, str], None]] = []
        self.checks = 0
        self.revoked = 0

    def __repr__(self) -> str:
        state = "running" if self._task is not None and not self._task.done() else "idle"
        return f"<KeyWatch {state} every {self.interval_s:g}s checks={self.checks} revoked={self.revoked}>"

    def live_key_ids(self) -> set[str]:
        keys = self._tunnels.key_ids() if self._tunnels is not None else set()
        keys.update(p.key_id for p in self._registry.online() if p.transport == "direct" and p.key_id)
        return keys

    async def check(self) -> list[Revoked]:
        """One pass: close what belongs to keys that may no longer be used."""
        live = self.live_key_ids()
        if not live:
            return []
        usable = await self._auth.usable_key_ids(live)
        self.checks += 1
        return [self.revoke(key_id) for key_id in sorted(live - usable)]

    def revoke(self, key_id: str) -> Revoked:
        """Cut ``key_id`` off now: cache entry, tunnels, direct providers."""
        self._auth.forget_key(key_id)
        closed = self._tunnels.close_key(key_id) if self._tunnels is not None else 0
        offline = [p.name for p in self._registry.take_offline(key_id)]
        if closed or offline:
            self.revoked += 1
            log.warning(
                "key %s is no longer valid: closed %d tunnel(s), took %d direct provider(s) offline",
                key_id,
                closed,
                len(offline),
            )
        return Revoked(key_id=key_id, tunnels_closed=closed, providers_offline=offline)

    def on_announce(self, announcer: Callable[[Subject, str], None]) -> None:
        """Call ``announcer`` (it must not block) after each change made in this process."""
        self._announcers.append(announcer)

    def key_revoked(self, key_id: str) -> Revoked:
        """This process revoked ``key_id``: cut it off here and tell the other replicas."""
        revoked = self.revoke(key_id)
        self._announce("key", key_id)
        return revoked

    def user_changed(self, user_id: str) -> None:
        """This process disabled or enabled ``user_id``: re-check keys here and tell the other replicas."""
        self.forget_all()
        self._announce("user", user_id)

    def forget_all(self) -> None:
        """Every cached key is read again, and live connections are checked soon."""
        self._auth.invalidate()
        self.check_soon()

    def check_soon(self) -> None:
        """Run one ``check`` in the background now (once, however often asked meanwhile)."""
        if self._soon is not None and not self._soon.done():
            return
        self._soon = asyncio.create_task(self._check_quietly(), name="key-watch-now")

    def _announce(self, subject: Subject, ident: str) -> None:
        for announcer in self._announcers:
            announcer(subject, ident)

    async def _check_quietly(self) -> None:
        try:
            await self.check()
        except DatabaseUnavailable:
            pass  # the periodic pass tries again
        except Exception:  # pragma: no cover - a bug must not go unnoticed in a task
            log.exception("key watch pass failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except DatabaseUnavailable:
                pass  # logged once per outage by the database; keys stay as last verified
            except Exception:  # pragma: no cover - a bug must not end the loop
                log.exception("key watch pass failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-watch")

    async def stop(self) -> None:
        if self._soon is not None:
            await cancel_and_wait(self._soon)
            self._soon = None
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
