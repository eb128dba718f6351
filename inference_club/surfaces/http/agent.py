"""Agent-facing endpoints under ``/api/inference/agent/``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from inference_club.domain.providers import parse_heartbeat
from inference_club.errors import InvalidRequest
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


@router.post(
    "/api/inference/agent/progress",
    status_code=202,
    summary="Agent progress report for a running engine job (direct transport).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["request_id", "progress"],
                        "properties": {
                            "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                            "progress": {"type": "number", "minimum": 0, "maximum": 1},
                            "stage": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def progress(request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    data = (await read_json(request)).data
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
        raise InvalidRequest("'request_id' must be a string of at most 128 characters.", param="request_id")
    value = data.get("progress")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise InvalidRequest("'progress' must be a number from 0 to 1.", param="progress")
    stage = data.get("stage", "")
    if not isinstance(stage, str):
        raise InvalidRequest("'stage' must be a string.", param="stage")
    accepted = hub.progress.report(principal.user_id, request_id, float(value), stage)
    return {"accepted": accepted}
