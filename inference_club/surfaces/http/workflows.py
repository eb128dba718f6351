"""``/v1/workflows``: templates and runs (DAGs of jobs with human gates). Thin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import JSONResponse, StreamingResponse

from inference_club.domain.jobs import MAX_WAIT_S
from inference_club.errors import InvalidRequest, NotFound
from inference_club.services.workflows import NO_EDIT
from inference_club.surfaces.http.deps import HubDep, PrincipalDep, base_url, request_id
from inference_club.surfaces.http.envelopes import accepted, page
from inference_club.surfaces.http.reading import read_json

router = APIRouter(tags=["workflows"])

_MAX_REASON = 2000

_STEP_EXAMPLE = [
    {
        "id": "outline",
        "kind": "inference",
        "type": "llm",
        "extract": "json",
        "body": {"prompt": 'Three scenes about {{inputs.topic}} as JSON {"scenes": [{"image_prompt"}]}'},
    },
    {
        "id": "pictures",
        "kind": "map",
        "type": "image",
        "over": "{{steps.outline.output.scenes}}",
        "body": {"prompt": "{{item.image_prompt}}", "size": "512x512"},
    },
    {"id": "review", "kind": "gate", "depends_on": ["pictures"]},
]

_CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "template": {"type": "string", "description": "A template key (or give `spec`)."},
                        "spec": {
                            "type": "object",
                            "description": 'A workflow spec `{"steps": [...]}` (or give `template`).',
                            "properties": {"steps": {"type": "array", "items": {"type": "object"}}},
                        },
                        "inputs": {"type": "object", "description": "Values for `{{inputs.x}}`."},
                        "name": {"type": "string", "maxLength": 255},
                    },
                },
                "examples": {
                    "template": {
                        "value": {"template": "illustrated-story", "inputs": {"topic": "a lighthouse cat"}}
                    },
                    "spec": {"value": {"spec": {"steps": _STEP_EXAMPLE}, "inputs": {"topic": "tides"}}},
                },
            }
        },
    },
    "responses": {
        "400": {"description": "`invalid_request` (inputs) or `invalid_spec` (names the step and field)."},
        "404": {"description": "`not_found`: unknown template."},
        "409": {"description": "`services_unavailable`: `error.missing` lists each modality nobody serves."},
    },
}

_APPROVE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"edit": {"description": "Any JSON value; replaces the gate's output."}},
                },
            }
        },
    },
    "responses": {"409": {"description": "`conflict`: the step is not an AWAITING gate."}},
}

_REJECT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "maxLength": _MAX_REASON}},
                },
            }
        },
    },
    "responses": {"409": {"description": "`conflict`: the step is not an AWAITING gate."}},
}


async def _optional_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    return (await read_json(request)).data


@router.get("/v1/workflows/templates", summary="Built-in workflow templates with their input forms.")
async def list_templates(hub: HubDep, _principal: PrincipalDep) -> dict[str, Any]:
    return {"object": "list", "data": [t.summary() for t in hub.workflows.templates.all()]}


@router.get("/v1/workflows/templates/{key}", summary="One template, with its spec and edges.")
async def get_template(key: str, hub: HubDep, _principal: PrincipalDep) -> dict[str, Any]:
    template = hub.workflows.templates.get(key)
    if template is None:
        raise NotFound(f"No workflow template {key!r}.", param="key")
    return template.detail()


@router.post(
    "/v1/workflows/runs",
    summary="Start a run of a template or of your own spec (optional Idempotency-Key).",
    status_code=202,
    openapi_extra=_CREATE_DOC,
    response_model=None,
)
async def create_run(request: Request, hub: HubDep, principal: PrincipalDep) -> JSONResponse:
    body = await read_json(request)
    run, replayed = await hub.workflows.create(
        principal,
        body.data,
        base_url=base_url(request),
        request_id=request_id(request),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return accepted(run, f"/v1/workflows/runs/{run['id']}", replayed=replayed)


@router.get("/v1/workflows/runs", summary="List your runs, newest first.")
async def list_runs(
    hub: HubDep,
    principal: PrincipalDep,
    status: str | None = Query(None, description="Only these statuses (comma-separated), e.g. `AWAITING`."),
    limit: int = Query(50, ge=1, le=200),
    after: str | None = Query(None, description="Cursor: the last id of the previous page."),
) -> dict[str, Any]:
    statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else []
    runs = await hub.workflows.list_runs(principal.user_id, statuses=statuses, limit=limit + 1, after=after)
    return page(runs, limit)


@router.get(
    "/v1/workflows/runs/{run_id}",
    summary="A run with its steps, jobs, edges and files; `?wait=N` waits up to N s for it to end or await a gate.",
)
async def get_run(
    run_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a final or AWAITING status."
    ),
) -> dict[str, Any]:
    return await hub.workflows.get(principal.user_id, run_id, wait_s=wait)


@router.get(
    "/v1/workflows/runs/{run_id}/events",
    summary="Server-sent events: one per step or run status change; resumable with Last-Event-ID.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    run_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    last_event_id: str | None = Header(None, description="Resume after this event id."),
) -> StreamingResponse:
    after = 0
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise InvalidRequest("Last-Event-ID must be an event id (a whole number).", param="Last-Event-ID")
        after = int(last_event_id.strip())
    await hub.workflows.require_run(principal.user_id, run_id)  # 404 before the stream starts
    events = hub.workflows.events(principal.user_id, run_id, after=after)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for item in events:
                yield _sse(item)
        finally:
            await events.aclose()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _sse(item: dict[str, Any] | None) -> bytes:
    if item is None:
        return b": keep-alive\n\n"
    return f"id: {item['seq']}\nevent: {item['type']}\n".encode() + b"data: " + orjson.dumps(item) + b"\n\n"


@router.post(
    "/v1/workflows/runs/{run_id}/cancel", summary="Cancel a run and every queued or running job of it."
)
async def cancel_run(run_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await hub.workflows.cancel(principal.user_id, run_id)


@router.post(
    "/v1/workflows/runs/{run_id}/steps/{step_id}/approve",
    summary="Approve an AWAITING gate; an optional `edit` replaces its output.",
    openapi_extra=_APPROVE_DOC,
)
async def approve_step(
    run_id: str, step_id: str, request: Request, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    data = await _optional_json(request)
    unknown = set(data) - {"edit"}
    if unknown:
        raise InvalidRequest(
            f"Unknown field {sorted(unknown)[0]!r}; approve takes only 'edit'.", param=sorted(unknown)[0]
        )
    edit = data["edit"] if "edit" in data else NO_EDIT
    return await hub.workflows.approve(principal.user_id, run_id, step_id, edit)


@router.post(
    "/v1/workflows/runs/{run_id}/steps/{step_id}/reject",
    summary="Reject an AWAITING gate: it fails, everything still running is canceled, the run fails.",
    openapi_extra=_REJECT_DOC,
)
async def reject_step(
    run_id: str, step_id: str, request: Request, hub: HubDep, principal: PrincipalDep
) -> dict[str, Any]:
    data = await _optional_json(request)
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise InvalidRequest(
            f"'reason' must be a string of at most {_MAX_REASON} characters.", param="reason"
        )
    return await hub.workflows.reject(principal.user_id, run_id, step_id, reason)


@router.post(
    "/v1/workflows/runs/{run_id}/steps/{step_id}/rerun",
    summary="Run a step and its descendants again (their in-flight jobs are canceled first).",
    status_code=202,
)
async def rerun_step(run_id: str, step_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await hub.workflows.rerun(principal.user_id, run_id, step_id)
