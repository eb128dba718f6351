"""``/v1/jobs``: async jobs. Thin: read, call the job service, answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response, StreamingResponse

from inference_club.domain.endpoints import Endpoint
from inference_club.domain.jobs import MAX_WAIT_S
from inference_club.services.auth import Principal
from inference_club.services.bodies import JsonBody
from inference_club.services.container import Hub
from inference_club.services.job_events import job_envelope, job_public
from inference_club.surfaces.http.deps import HubDep, PrincipalDep, base_url, hub_and_caller, request_id
from inference_club.surfaces.http.disconnect import DisconnectWatch, WatchedStreamingResponse
from inference_club.surfaces.http.envelopes import accepted, page
from inference_club.surfaces.http.fast_path import FastRoute

router = APIRouter(tags=["jobs"])

_JOB_ID = "The job's id (`job_…`)."


async def accept_job(
    request: Request, hub: Hub, principal: Principal, endpoint: Endpoint, model: str, body: JsonBody
) -> Response:
    """Queue a validated inference call (``"async": true``) and answer 202."""
    job, replayed = await hub.jobs.submit(
        principal,
        endpoint,
        model,
        body.data,
        base_url=base_url(request),
        request_id=request_id(request),
        idempotency_key=request.headers.get("idempotency-key"),
        check=lambda: hub.router.require_candidates(principal, endpoint, model),
    )
    return accepted(job_envelope(job), f"/v1/jobs/{job.id}", replayed=replayed)


@router.get("/v1/jobs", summary="List your jobs, newest first.")
async def list_jobs(
    hub: HubDep,
    principal: PrincipalDep,
    status: str | None = Query(None, description="Only these statuses (comma-separated), e.g. `FAILED`."),
    active: bool = Query(False, description="Only QUEUED and PROCESSING jobs."),
    batch_id: str | None = Query(None, description="Only the jobs of this batch."),
    limit: int = Query(50, ge=1, le=200),
    after: str | None = Query(None, description="Cursor: the last id of the previous page."),
) -> dict[str, Any]:
    statuses = [s.strip().upper() for s in status.split(",") if s.strip()] if status else []
    jobs = await hub.jobs.list_jobs(
        principal.user_id, statuses=statuses, active=active, batch_id=batch_id, limit=limit + 1, after=after
    )
    return page([job_public(j, with_result=False) for j in jobs], limit)


@router.get(
    "/v1/jobs/summary", summary="Queue summary: counts by status, oldest queued job, dispatcher pulse."
)
async def queue_summary(
    hub: HubDep,
    principal: PrincipalDep,
    scope: str = Query(
        "user",
        pattern="^(user|hub)$",
        description="`user` (your jobs) or `hub` (every user's; administrators only).",
    ),
) -> dict[str, Any]:
    whole_hub = scope == "hub" and principal.is_admin
    return await hub.jobs.summary(None if whole_hub else principal.user_id)


@router.get("/v1/jobs/{job_id}", summary="A job with its result; `?wait=N` waits up to N s for it to end.")
async def get_job(
    job_id: str,
    hub: HubDep,
    principal: PrincipalDep,
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_S, description="Seconds to wait for a terminal status (max 60)."
    ),
) -> dict[str, Any]:
    return job_public(await hub.jobs.get(principal.user_id, job_id, wait_s=wait))


@router.post(
    "/v1/jobs/{job_id}/cancel", summary="Cancel a QUEUED or PROCESSING job (aborts it on the provider)."
)
async def cancel_job(job_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_public(await hub.jobs.cancel(principal.user_id, job_id))


@router.post("/v1/jobs/{job_id}/retry", summary="Queue a FAILED or CANCELED job again.", status_code=202)
async def retry_job(job_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_public(await hub.jobs.retry(principal.user_id, job_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Server-sent events: the job at every change of status, ending after the last.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(job_id: str, request: Request, hub: HubDep, principal: PrincipalDep) -> Response:
    # Served by job_events_fast (surfaces/http/fast_path.py); registered for the API document.
    return await _job_events(request, hub, principal, job_id)


async def job_events_fast(request: Request) -> Response:
    """:func:`job_events` for the fast path: the request alone, the same two steps as the deps."""
    hub, principal = await hub_and_caller(request)
    return await _job_events(request, hub, principal, request.path_params["job_id"])


def fast_routes() -> list[FastRoute]:
    """The event stream's route for :mod:`fast_path`: open for hours, it is best kept shallow."""
    return [
        FastRoute(route=route, handler=job_events_fast)
        for route in router.routes
        if isinstance(route, APIRoute) and route.endpoint is job_events
    ]


async def _job_events(request: Request, hub: Hub, principal: Principal, job_id: str) -> Response:
    events = hub.jobs.events(principal.user_id, job_id)
    first = await anext(events)  # raises NotFound before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _sse(first)
            async for item in events:
                yield _sse(item)
        finally:
            await events.aclose()

    response = StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
    # One watch per open stream, not Starlette's task group (no task at all under the
    # hub's HTTP protocol): idle watchers add up.
    return WatchedStreamingResponse(response, DisconnectWatch(request))


def _sse(item: dict[str, Any] | None) -> bytes:
    if item is None:
        return b": keep-alive\n\n"
    return b"event: status\ndata: " + orjson.dumps(item) + b"\n\n"
