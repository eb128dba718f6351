"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models of the caller's reachable online providers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inference_club.errors import NotFound
from inference_club.services.auth import Principal
from inference_club.services.catalog import reachable_models
from inference_club.services.container import Hub
from inference_club.surfaces.http.deps import HubDep, PrincipalDep
from inference_club.surfaces.http.schemas import MODEL_LIST_SCHEMA, MODEL_SCHEMA, error_responses

router = APIRouter(tags=["models"])


def _entries(hub: Hub, principal: Principal) -> list[dict[str, Any]]:
    return reachable_models(hub.registry, principal, window_s=hub.settings.online_window_s)


@router.get(
    "/v1/models",
    summary="Models you can reach, with capabilities.",
    responses={200: {"content": {"application/json": {"schema": MODEL_LIST_SCHEMA}}}, **error_responses(401)},
)
async def list_models(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"object": "list", "data": _entries(hub, principal)}


@router.get(
    "/v1/models/{model_id:path}",
    summary="One model you can reach (404 `not_found` when none of your online providers serves it).",
    responses={200: {"content": {"application/json": {"schema": MODEL_SCHEMA}}}, **error_responses(401, 404)},
)
async def retrieve_model(model_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    for entry in _entries(hub, principal):
        if entry["id"] == model_id:
            return entry
    raise NotFound(f"No online provider you can reach serves model {model_id!r}.", param="model")
