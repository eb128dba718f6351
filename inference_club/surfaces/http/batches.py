"""``/v1/batches``: up to 256 jobs at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse

from inference_club.surfaces.http.deps import HubDep, PrincipalDep, base_url, request_id
from inference_club.surfaces.http.envelopes import accepted, page
from inference_club.surfaces.http.reading import read_json

router = APIRouter(tags=["batches"])

_CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["requests"],
                    "properties": {
                        "label": {"type": "string", "maxLength": 255},
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 256,
                            "items": {
                                "type": "object",
                                "required": ["endpoint", "body"],
                                "properties": {
                                    "endpoint": {"type": "string", "example": "/v1/chat/completions"},
                                    "body": {"type": "object"},
                                },
                            },
                        },
                    },
                },
                "example": {
                    "label": "two questions",
                    "requests": [
                        {
                            "endpoint": "/v1/chat/completions",
                            "body": {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Hi"}]},
                        },
                        {"endpoint": "/v1/images/generations", "body": {"model": "sdxl", "prompt": "a fox"}},
                    ],
                },
            }
        },
    }
}


@router.post(
    "/v1/batches",
    summary="Queue 1-256 requests as one batch (all validated first; optional Idempotency-Key).",
    status_code=202,
    openapi_extra=_CREATE_DOC,
    response_model=None,
)
async def create_batch(request: Request, hub: HubDep, principal: PrincipalDep) -> JSONResponse:
    body = await read_json(request)
    batch, replayed = await hub.batches.create(
        principal,
        body.data,
        base_url=base_url(request),
        request_id=request_id(request),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return accepted(batch, f"/v1/batches/{batch['id']}", replayed=replayed)


@router.get("/v1/batches", summary="List your batches, newest first.")
async def list_batches(
    hub: HubDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=200),
    after: str | None = Query(None, description="Cursor: the last id of the previous page."),
) -> dict[str, Any]:
    batches = await hub.batches.list_batches(principal, limit=limit + 1, after=after)
    return page(batches, limit)


@router.get("/v1/batches/{batch_id}", summary="A batch with its counts and jobs.")
async def get_batch(batch_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await hub.batches.get(principal, batch_id)


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel every queued or running job of a batch.")
async def cancel_batch(batch_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await hub.batches.cancel(principal, batch_id)
