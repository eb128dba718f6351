"""Agent-facing endpoints under ``/api/inference/agent/``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from inference_club.domain.providers import parse_heartbeat
from inference_club.surfaces.http.deps import HubDep, PrincipalDep
from inference_club.surfaces.http.reading import read_json

router = APIRouter(tags=["agent"])


@router.post(
    "/api/inference/agent/heartbeat",
    summary="Agent heartbeat: registers or refreshes the caller's provider.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "required": ["name"]}}},
        }
    },
)
async def heartbeat(request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    body = parse_heartbeat((await read_json(request)).data)
    provider = await hub.registry.heartbeat(principal, body)
    return {
        "provider_id": provider.id,
        "online": True,
        "interval_s": hub.settings.heartbeat_interval_s,
        "online_window_s": hub.settings.online_window_s,
        "agent_secret": provider.agent_secret,
    }
