"""Provider registry: heartbeats in, an in-memory snapshot out for routing.

The database keeps providers (with services and models) for the dashboard and for
restarts; routing never reads it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime

from inference_club.domain.callback_url import parse_callback_url
from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.ids import new_id
from inference_club.domain.providers import HeartbeatBody, ProviderState, ServiceDecl, ServiceInfo
from inference_club.errors import DatabaseUnavailable, InvalidRequest
from inference_club.services.auth import Principal
from inference_club.services.callback_policy import CallbackBlocked, CallbackPolicy
from inference_club.settings import Settings
from inference_club.store import providers as q
from inference_club.store.db import Database
from inference_club.store.tables import Provider


class ProviderRegistry:
    def __init__(
        self, database: Database, settings: Settings, callback_policy: CallbackPolicy | None = None
    ) -> None:
        self._db = database
        self._settings = settings
        self._callback_policy = callback_policy or CallbackPolicy.from_settings(settings)
        self._providers: dict[str, ProviderState] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._listeners: list[Callable[[ProviderState], None]] = []
        self._local_listeners: list[Callable[[ProviderState], None]] = []

    def __repr__(self) -> str:
        return f"<ProviderRegistry providers={len(self._providers)}>"

    async def load(self) -> None:
        """Fill the snapshot from the database (after a restart)."""
        async with self._db.read() as session:
            rows = await q.list_providers(session)
        for row in rows:
            self._store(_state_from_row(row))

    def on_change(self, listener: Callable[[ProviderState], None]) -> None:
        self._listeners.append(listener)

    def on_local_update(self, listener: Callable[[ProviderState], None]) -> None:
        """Called after this process accepted a heartbeat or changed a provider (not for
        changes learnt from other replicas)."""
        self._local_listeners.append(listener)

    def changed(self, state: ProviderState) -> None:
        """``state`` was updated in place (from another replica): tell the listeners."""
        for listener in self._listeners:
            listener(state)

    async def adopt(self, provider_id: str) -> ProviderState | None:
        """A provider another replica registered: its row into the snapshot (secret included)."""
        known = self._providers.get(provider_id)
        if known is not None:
            return known
        async with self._db.read() as session:
            row = await q.get_provider_by_id(session, provider_id=provider_id)
        if row is None:
            return None
        self._store(_state_from_row(row))
        return self._providers[provider_id]

    def all(self) -> list[ProviderState]:
        return list(self._providers.values())

    def get(self, provider_id: str) -> ProviderState | None:
        return self._providers.get(provider_id)

    def find(self, user_id: str, name: str) -> ProviderState | None:
        provider_id = self._by_name.get((user_id, name))
        return self._providers.get(provider_id) if provider_id else None

    def online(self) -> list[ProviderState]:
        now = time.time()
        window = self._settings.online_window_s
        return [p for p in self._providers.values() if p.is_online(now, window)]

    async def heartbeat(self, principal: Principal, body: HeartbeatBody) -> ProviderState:
        """Create or update the caller's provider named ``body.name``."""
        callback_url = body.callback_url
        if body.transport == "direct":
            if not callback_url:
                raise InvalidRequest(
                    "callback_url is required for the direct transport", param="callback_url"
                )
            callback_url = await self.check_callback_url(callback_url)
        services = [ServiceInfo.from_decl(i, s) for i, s in enumerate(body.normalized_services())]
        try:
            state = await self._write_heartbeat(principal, body, services, callback_url)
        except DatabaseUnavailable:
            known = self.find(principal.user_id, body.name)
            if known is None:
                raise
            # A provider the hub already knows stays routable through a database outage;
            # its row is written by the first heartbeat after it.
            self._apply_in_memory(known, principal, body, services, callback_url)
            state = known
        for listener in self._local_listeners:
            listener(state)
        return state

    def _apply_in_memory(
        self,
        state: ProviderState,
        principal: Principal,
        body: HeartbeatBody,
        services: list[ServiceInfo],
        callback_url: str | None,
    ) -> None:
        state.transport = body.transport
        state.callback_url = callback_url
        state.version = body.version
        state.services = services
        state.health = dict(body.health)
        state.last_seen = time.time()
        state.key_id = principal.key_id
        if body.visibility:
            state.visibility = body.visibility
        for listener in self._listeners:
            listener(state)

    async def _write_heartbeat(
        self, principal: Principal, body: HeartbeatBody, services: list[ServiceInfo], callback_url: str | None
    ) -> ProviderState:
        now = utcnow()
        async with self._db.transaction() as session:
            row = await q.get_provider(session, user_id=principal.user_id, name=body.name)
            if row is None:
                row = Provider(
                    id=new_id("prov"),
                    user_id=principal.user_id,
                    name=body.name,
                    agent_secret=secrets.token_urlsafe(32),
                    visibility=body.visibility or "private",
                    created_at=now,
                )
                await q.add_provider(session, provider=row)
            row.transport = body.transport
            row.callback_url = callback_url
            row.version = body.version
            row.services = [s.to_json() for s in services]
            row.health = body.health
            row.last_heartbeat_at = now
            if body.visibility:
                row.visibility = body.visibility
        previous = self._providers.get(row.id)
        state = _state_from_row(row)
        state.key_id = principal.key_id
        if previous is not None:
            state.tunnels = previous.tunnels
            state.remote_tunnels = previous.remote_tunnels
        self._store(state)
        return state

    async def set_visibility(self, provider_id: str, visibility: str) -> None:
        async with self._db.transaction() as session:
            row = await q.get_provider_by_id(session, provider_id=provider_id)
            if row is not None:
                row.visibility = visibility
        state = self._providers.get(provider_id)
        if state is not None:
            state.visibility = visibility
            for listener in self._local_listeners:
                listener(state)

    def take_offline(self, key_id: str) -> list[ProviderState]:
        """Direct providers last heartbeated with ``key_id`` (now revoked) stop being routable."""
        dropped = [
            p
            for p in self._providers.values()
            if p.key_id == key_id and p.transport == "direct" and p.last_seen
        ]
        for state in dropped:
            state.last_seen = 0.0
            for listener in self._listeners:
                listener(state)
        return dropped

    def _store(self, state: ProviderState) -> None:
        self._providers[state.id] = state
        self._by_name[(state.user_id, state.name)] = state.id
        for listener in self._listeners:
            listener(state)

    async def check_callback_url(self, url: str) -> str:
        """The normalised URL; a 400 when it is malformed or reaches a blocked network (no SSRF)."""
        target = parse_callback_url(url)
        try:
            await self._callback_policy.addresses(target)
        except CallbackBlocked as exc:
            raise InvalidRequest(f"callback_url {exc}", param="callback_url") from None
        return str(target)


def _state_from_row(row: Provider) -> ProviderState:
    services = [
        ServiceInfo.from_decl(i, ServiceDecl.model_validate(s)) for i, s in enumerate(row.services or [])
    ]
    last = row.last_heartbeat_at
    return ProviderState(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        transport=row.transport,
        callback_url=row.callback_url,
        visibility=row.visibility,
        agent_secret=row.agent_secret,
        services=services,
        last_seen=as_utc(last).timestamp() if isinstance(last, datetime) else 0.0,
        created=int(as_utc(row.created_at).timestamp()),
        version=row.version,
        health=dict(row.health or {}),
    )
