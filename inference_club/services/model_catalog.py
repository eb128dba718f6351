"""What a caller can reach: the ``/v1/models`` entries, and why a model is not routable.

One entry per model id, however many providers and service types serve it: the entry
lists every service type (``service_types``) and merges the declared capabilities.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from inference_club.domain.endpoints import Endpoint
from inference_club.domain.engine_health import service_health
from inference_club.domain.providers import ProviderState, ServiceInfo
from inference_club.services.auth import Principal

__all__ = ["model_entries", "reachable_providers", "why_no_provider"]


def reachable_providers(
    providers: Iterable[ProviderState], principal: Principal, *, now: float, online_window_s: float
) -> list[ProviderState]:
    """Online providers the caller may use, own ones first (oldest first inside a tier)."""
    found = [
        p
        for p in providers
        if p.is_online(now, online_window_s) and p.usable_by(principal.user_id, principal.routing_preference)
    ]
    found.sort(key=lambda p: (p.user_id != principal.user_id, p.created))
    return found


def _extend(target: list[str], values: Iterable[str]) -> None:
    target.extend(v for v in values if v not in target)


def model_entries(providers: Iterable[ProviderState], *, owner_id: str | None = None) -> list[dict[str, Any]]:
    """The ``/v1/models`` data list; ``owned_by`` names the first provider serving the id.

    On models of ``owner_id``'s own providers, ``engine`` tells how the engine is doing.
    """
    entries: dict[str, dict[str, Any]] = {}
    for provider in providers:
        for service in provider.services:
            for model in service.models.values():
                entry = entries.get(model.id)
                if entry is None:
                    entries[model.id] = {
                        "id": model.id,
                        "object": "model",
                        "created": provider.created,
                        "owned_by": provider.name,
                        "service_type": service.type.value,
                        "service_types": [service.type.value],
                        "input_modalities": list(model.input_modalities),
                        "output_modalities": list(model.output_modalities),
                        "supported_features": list(model.features),
                        "context_length": model.context_length,
                    }
                    if provider.user_id == owner_id:
                        entries[model.id]["engine"] = service_health(provider, service)
                    continue
                _extend(entry["service_types"], [service.type.value])
                _extend(entry["input_modalities"], model.input_modalities)
                _extend(entry["output_modalities"], model.output_modalities)
                _extend(entry["supported_features"], model.features)
                if entry["context_length"] is None:
                    entry["context_length"] = model.context_length
    return list(entries.values())


def _server_unreachable(provider: ProviderState, service: ServiceInfo) -> bool:
    """The agent's health snapshot says this service's local server does not answer."""
    reported = provider.health.get("services")
    if not isinstance(reported, list):
        return False
    for item in reported:
        if isinstance(item, dict) and item.get("index") == service.index:
            return item.get("reachable") is False
    return False


def why_no_provider(providers: Iterable[ProviderState], endpoint: Endpoint, model: str) -> str:
    """The message of a ``no_provider`` answer: what the caller can do about it.

    ``providers`` are the caller's reachable online providers.
    """
    wanted = endpoint.service_type
    feature = f" with feature {endpoint.required_feature!r}" if endpoint.required_feature else ""
    other_types: list[str] = []
    down: list[str] = []
    lacking_feature = False
    for provider in providers:
        for service in provider.services:
            if service.type != wanted:
                if model in service.models and service.type.value not in other_types:
                    other_types.append(service.type.value)
                continue
            if model in service.models:
                lacking_feature = True
            elif _server_unreachable(provider, service) and provider.name not in down:
                down.append(provider.name)
    if other_types and not lacking_feature:
        return f"{model!r} is served as {', '.join(other_types)}, not {wanted.value}; use its endpoint."
    message = f"No online provider serving model {model!r} ({wanted.value}{feature}) for this user."
    if down:
        names = ", ".join(repr(n) for n in down)
        verb = "is" if len(down) == 1 else "are"
        message += f" Provider {names} {verb} online but its {wanted.value} server is unreachable."
    return message
