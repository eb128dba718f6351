"""Workflow pages: the template gallery with generated forms, and a run's live graph.

Starting a run, approving or rejecting a gate and cancelling go through the workflow
service exactly as ``/v1/workflows`` does, with the signed-in user as the principal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from inference_club.errors import HubError
from inference_club.services.container import Hub
from inference_club.surfaces.dashboard.dag import NODE_H, NODE_W, layout
from inference_club.surfaces.dashboard.media import media_kind, signed_url
from inference_club.surfaces.dashboard.security import (
    ApiRoute,
    PageRoute,
    SignedIn,
    SignedInDep,
    hub_of,
    page,
)
from inference_club.surfaces.http import workflows as v1
from inference_club.surfaces.http.deps import base_url, request_id

PAGE_SIZE = 50
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

router = APIRouter(route_class=PageRoute, include_in_schema=False)
api_router = APIRouter(prefix="/dashboard/api/workflows", route_class=ApiRoute, include_in_schema=False)


async def _gallery(
    request: Request,
    me: SignedIn,
    *,
    after: str | None = None,
    status_code: int = 200,
    error: str | None = None,
    submitted: dict[str, str] | None = None,
    submitted_template: str | None = None,
) -> Response:
    hub = hub_of(request)
    templates = [t.summary() for t in hub.workflows.templates.all()]
    runs = await hub.workflows.list_runs(me.user.id, statuses=[], limit=PAGE_SIZE + 1, after=after)
    next_after = runs[PAGE_SIZE - 1]["id"] if len(runs) > PAGE_SIZE else None
    return page(
        request,
        me,
        "workflows.html",
        status_code=status_code,
        templates=templates,
        runs=runs[:PAGE_SIZE],
        next_after=next_after,
        error=error,
        submitted=submitted or {},
        submitted_template=submitted_template,
    )


@router.get("/dashboard/workflows")
async def gallery(
    request: Request, me: SignedInDep, after: str | None = Query(None, max_length=64)
) -> Response:
    return await _gallery(request, me, after=after)


@router.post("/dashboard/workflows/runs")
async def start_run(request: Request, me: SignedInDep) -> Response:
    """The gallery's form: ``template`` and one ``input_<name>`` field per template input."""
    hub = hub_of(request)
    form = await request.form()
    key = str(form.get("template", ""))[:64]
    template = hub.workflows.templates.get(key)
    values = {
        f["name"]: str(form.get(f"input_{f['name']}", "")) for f in (template.inputs if template else [])
    }
    # An empty optional field means "use the template's default", as if it had not been sent.
    inputs = {name: value for name, value in values.items() if value.strip() != ""}
    try:
        run, _ = await hub.workflows.create(
            me.principal,
            {"template": key, "inputs": inputs},
            base_url=base_url(request),
            request_id=request_id(request),
        )
    except HubError as exc:
        return await _gallery(
            request,
            me,
            status_code=exc.status_code,
            error=exc.message,
            submitted=values,
            submitted_template=key,
        )
    return RedirectResponse(f"/dashboard/workflows/runs/{run['id']}", status_code=303)


@router.get("/dashboard/workflows/runs/{run_id}")
async def run_page(run_id: str, request: Request, me: SignedInDep) -> Response:
    run = await hub_of(request).workflows.get(me.user.id, run_id)
    graph = layout(run["steps"], run["edges"])
    return page(request, me, "workflow_run.html", run=run, graph=graph, node_w=NODE_W, node_h=NODE_H)


# --------------------------------------------------------------------------- the run page's script


def _event(item: dict[str, Any]) -> bytes:
    return f"id: {item['seq']}\nevent: {item['type']}\n".encode() + b"data: " + orjson.dumps(item) + b"\n\n"


def _with_media(hub: Hub, run: dict[str, Any]) -> dict[str, Any]:
    """The run as ``/v1`` shows it, its files with a player kind and a signed link each."""
    files = [
        {**f, "kind": media_kind(str(f.get("content_type", ""))), "src": signed_url(hub, str(f["id"]))}
        for f in run.get("files", [])
        if isinstance(f, dict) and f.get("id")
    ]
    return {**run, "files": files}


@api_router.get("/runs/{run_id}")
async def run_json(run_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    hub = hub_of(request)
    return _with_media(hub, await hub.workflows.get(me.user.id, run_id))


@api_router.get("/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, me: SignedInDep) -> StreamingResponse:
    hub = hub_of(request)
    await hub.workflows.require_run(me.user.id, run_id)  # 404 before the stream starts
    events = hub.workflows.events(me.user.id, run_id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for item in events:
                yield b": keep-alive\n\n" if item is None else _event(item)
        finally:
            await events.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


@api_router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    hub = hub_of(request)
    return _with_media(hub, await v1.cancel_run(run_id, hub, me.principal))


@api_router.post("/runs/{run_id}/steps/{step_id}/approve")
async def approve(run_id: str, step_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    hub = hub_of(request)
    return _with_media(hub, await v1.approve_step(run_id, step_id, request, hub, me.principal))


@api_router.post("/runs/{run_id}/steps/{step_id}/reject")
async def reject(run_id: str, step_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    hub = hub_of(request)
    return _with_media(hub, await v1.reject_step(run_id, step_id, request, hub, me.principal))
