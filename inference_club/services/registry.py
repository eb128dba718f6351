"""Provider registry: heartbeats in, an in-memory snapshot out for routing.

The database keeps providers (with services and models) for the dashboard and for
restarts; routing never reads it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import anyio

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.ids import new_id
from inference_club.domain.providers import HeartbeatBody, ProviderState, ServiceDecl, ServiceInfo
from inference_club.errors import InvalidRequest
from inference_club.services.auth import Principal
from inference_club.settings import Settings
from inference_club.store import providers as q
from inference_club.store.db import Database
from inference_club.store.tables import Provider


class ProviderRegistry:
    def __init__(self, database: Database, settings: Settings) -> None:
        self._db = database
        self._settings = settings
        self._providers: dict[str, ProviderState] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._listeners: list[Callable[[ProviderState], None]] = []

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
        if body.transport == "direct":
            if not body.callback_url:
                raise InvalidRequest("callback_url is required for the direct transport", param="callback_url")
            await self.check_callback_url(body.callback_url)
        services = [ServiceInfo.from_decl(i, s) for i, s in enumerate(body.normalized_services())]
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
            row.callback_url = body.callback_url
            row.version = body.version
            row.services = [s.to_json() for s in services]
            row.health = body.health
            row.last_heartbeat_at = now
            if body.visibility:
                row.visibility = body.visibility
        previous = self._providers.get(row.id)
        state = _state_from_row(row)
        if previous is not None:
            state.tunnels = previous.tunnels
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

    def _store(self, state: ProviderState) -> None:
        self._providers[state.id] = state
        self._by_name[(state.user_id, state.name)] = state.id
        for listener in self._listeners:
            listener(state)

    async def check_callback_url(self, url: str) -> None:
        """Refuse callback URLs that resolve into blocked networks (no SSRF)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest("callback_url must be an http(s) URL with a host", param="callback_url")
        try:
            infos = await anyio.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
        except OSError:
            raise InvalidRequest(
                f"callback_url host {parts.hostname!r} does not resolve", param="callback_url"
            ) from None
        deny = [ipaddress.ip_network(c, strict=False) for c in self._settings.callback_deny_cidrs]
        allow = [ipaddress.ip_network(c, strict=False) for c in self._settings.callback_allow_cidrs]
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if any(address in net for net in deny) or (allow and not any(address in net for net in allow)):
                raise InvalidRequest(
                    f"callback_url points into a blocked network ({address})", param="callback_url"
                )


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
