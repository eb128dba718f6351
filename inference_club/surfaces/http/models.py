"""``GET /v1/models``: the models of the caller's reachable online providers."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from inference_club.surfaces.http.deps import HubDep, PrincipalDep

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="Models you can reach, with capabilities.")
async def list_models(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    now = time.time()
    window = hub.settings.online_window_s
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    providers = [
        p
        for p in hub.registry.all()
        if p.is_online(now, window) and p.usable_by(principal.user_id, principal.routing_preference)
    ]
    # Own providers first, so owned_by names yours when a shared one serves the same model.
    providers.sort(key=lambda p: (p.user_id != principal.user_id, p.created))
    for provider in providers:
        for service in provider.services:
            for model in service.models.values():
                key = (model.id, service.type.value)
                entry = entries.get(key)
                if entry is None:
                    entries[key] = {
                        "id": model.id,
                        "object": "model",
                        "created": provider.created,
                        "owned_by": provider.name,
                        "service_type": service.type.value,
                        "input_modalities": list(model.input_modalities),
                        "output_modalities": list(model.output_modalities),
                        "supported_features": list(model.features),
                        "context_length": model.context_length,
                    }
                else:
                    features = entry["supported_features"]
                    features.extend(f for f in model.features if f not in features)
    return {"object": "list", "data": list(entries.values())}
