"""An engine's health as its provider's owner sees it on ``/v1/models``.

The agent's heartbeat ``health.services[i]`` carries ``reachable``, ``busy`` and
``last_error`` per service; the owner's model entries show them as ``engine``::

    {"name": "comfyui", "reachable": true, "busy": false, "last_error": null}

Other users never see it (a provider's local trouble is its owner's business).
"""

from __future__ import annotations

from typing import Any

from inference_club.domain.providers import ProviderState, ServiceInfo

__all__ = ["service_health"]


def service_health(provider: ProviderState, service: ServiceInfo) -> dict[str, Any]:
    reported: dict[str, Any] = {}
    services = provider.health.get("services") if isinstance(provider.health, dict) else None
    if isinstance(services, list):
        for item in services:
            if isinstance(item, dict) and item.get("index") == service.index:
                reported = item
                break
    last_error = reported.get("last_error")
    return {
        "name": service.engine,
        "reachable": reported.get("reachable") if isinstance(reported.get("reachable"), bool) else None,
        "busy": reported.get("busy") if isinstance(reported.get("busy"), bool) else None,
        "last_error": last_error[:300] if isinstance(last_error, str) else None,
    }
