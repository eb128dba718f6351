"""What a user can see of the providers: their machines with live state, reachable models.

Read from the registry's in-memory snapshot and the capacity counters, never the database.
"""

from __future__ import annotations

import time
from typing import Any

from inference_club.domain.providers import ProviderState
from inference_club.services.auth import Principal
from inference_club.services.capacity import SlotPool
from inference_club.services.model_catalog import model_entries, reachable_providers
from inference_club.services.registry import ProviderRegistry


def reachable_models(
    registry: ProviderRegistry, principal: Principal, *, window_s: float, with_source: bool = False
) -> list[dict[str, Any]]:
    """The models of the online providers the caller may use, as ``GET /v1/models`` lists them.

    ``with_source`` adds ``mine`` (served by one of the caller's own providers) for the dashboard.
    """
    providers = reachable_providers(registry.all(), principal, now=time.time(), online_window_s=window_s)
    entries = model_entries(providers, owner_id=principal.user_id)
    if with_source:
        own = {m for p in providers if p.user_id == principal.user_id for s in p.services for m in s.models}
        for entry in entries:
            entry["mine"] = entry["id"] in own
    return entries


def provider_public(
    provider: ProviderState, capacity: SlotPool, *, window_s: float, now: float | None = None
) -> dict[str, Any]:
    """A provider with its live state: online, last seen, services with capacity in use."""
    now = now or time.time()
    return {
        "id": provider.id,
        "object": "provider",
        "name": provider.name,
        "owner": provider.user_id,
        "transport": provider.transport,
        "visibility": provider.visibility,
        "version": provider.version,
        "online": provider.is_online(now, window_s),
        "last_seen": int(provider.last_seen) if provider.last_seen else None,
        "tunnels": provider.tunnels + sum(provider.remote_tunnels.values()),
        "created": provider.created,
        "services": [
            {
                "type": service.type.value,
                "engine": service.engine,
                "max_concurrency": service.max_concurrency,
                "in_use": capacity.load((provider.id, service.index)),
                "models": sorted(service.models),
            }
            for service in provider.services
        ],
    }


def providers_public(
    registry: ProviderRegistry, capacity: SlotPool, *, window_s: float, user_id: str | None
) -> list[dict[str, Any]]:
    """``user_id``'s providers (every provider when None), by name."""
    now = time.time()
    chosen = [p for p in registry.all() if user_id is None or p.user_id == user_id]
    chosen.sort(key=lambda p: (p.user_id, p.name))
    return [provider_public(p, capacity, window_s=window_s, now=now) for p in chosen]
