"""JSON and event-stream routes behind the dashboard's scripts, authorized by the session.

Each calls the same operation as its ``/v1`` counterpart (``surfaces.http.management``,
the job and batch services, the inference executors) with the signed-in user as the
principal; nothing here is a second implementation. ``/v1`` itself never accepts the
session cookie.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from inference_club.domain.endpoints import ENDPOINTS, Endpoint
from inference_club.domain.jobs import BatchStatus
from inference_club.services.catalog import reachable_models
from inference_club.services.job_events import job_public
from inference_club.services.usage_report import MAX_DAYS
from inference_club.surfaces.dashboard.security import AdminDep, ApiRoute, SignedIn, SignedInDep, hub_of
from inference_club.surfaces.http import management
from inference_club.surfaces.http.deps import base_url
from inference_club.surfaces.http.files import FileShare, share_file
from inference_club.surfaces.http.inference import answer
from inference_club.surfaces.http.management import KeyCreate, UserCreate

PREFIX = "/dashboard/api"
LIVE_INTERVAL_S = 1.0
KEEPALIVE_S = 15.0

router = APIRouter(prefix=PREFIX, route_class=ApiRoute, include_in_schema=False)

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# --------------------------------------------------------------------------- keys, providers, usage


@router.get("/keys")
async def list_keys(request: Request, me: SignedInDep) -> dict[str, Any]:
    return await management.list_keys_of(hub_of(request), me.principal)


@router.post("/keys", status_code=201)
async def create_key(request: Request, me: SignedInDep, body: KeyCreate) -> JSONResponse:
    return JSONResponse(
        await management.create_key_for(hub_of(request), me.principal, body.name), status_code=201
    )


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    return await management.revoke_key_of(hub_of(request), me.principal, key_id)


@router.get("/providers")
async def list_providers(request: Request, me: SignedInDep) -> dict[str, Any]:
    return management.list_providers_of(hub_of(request), me.principal)


@router.get("/usage")
async def usage(
    request: Request, me: SignedInDep, days: int = Query(30, ge=1, le=MAX_DAYS)
) -> dict[str, Any]:
    return await management.usage_of(hub_of(request), me.principal, days)


@router.get("/models")
async def models(request: Request, me: SignedInDep) -> dict[str, Any]:
    hub = hub_of(request)
    return {
        "object": "list",
        "data": reachable_models(hub.registry, me.principal, window_s=hub.settings.online_window_s),
    }


# --------------------------------------------------------------------------- jobs, batches, files


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    return job_public(await hub_of(request).jobs.cancel(me.user.id, job_id))


@router.post("/jobs/{job_id}/retry", status_code=202)
async def retry_job(job_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    return job_public(await hub_of(request).jobs.retry(me.user.id, job_id))


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, me: SignedInDep) -> StreamingResponse:
    events = hub_of(request).jobs.events(me.user.id, job_id)
    first = await anext(events)  # NotFound before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield _event("status", first)
            async for item in events:
                yield b": keep-alive\n\n" if item is None else _event("status", item)
        finally:
            await events.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    return await hub_of(request).batches.cancel(me.principal, batch_id)


@router.get("/batches/{batch_id}/events")
async def batch_events(batch_id: str, request: Request, me: SignedInDep) -> StreamingResponse:
    """The batch's counts whenever they change, ending once every job has ended."""
    batches = hub_of(request).batches
    first = await batches.get(me.principal, batch_id, with_jobs=True)  # NotFound before the stream

    async def stream() -> AsyncIterator[bytes]:
        current, quiet = first, 0.0
        yield _event("batch", current)
        while current["status"] != BatchStatus.DONE:
            await asyncio.sleep(LIVE_INTERVAL_S)
            fresh = await batches.get(me.principal, batch_id, with_jobs=True)
            if fresh != current:
                current, quiet = fresh, 0.0
                yield _event("batch", current)
            else:
                quiet += LIVE_INTERVAL_S
                if quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield b": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request, me: SignedInDep) -> dict[str, Any]:
    await hub_of(request).files.delete(file_id, user_id=me.user.id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.post("/files/{file_id}/share")
async def share(
    file_id: str, request: Request, me: SignedInDep, body: FileShare | None = None
) -> dict[str, Any]:
    return await share_file(file_id, request, hub_of(request), me.principal, body)


# --------------------------------------------------------------------------- live overview


def _live_state(request: Request, me: SignedIn) -> dict[str, Any]:
    hub = hub_of(request)
    return {"machines": management.list_providers_of(hub, me.principal)["data"]}


@router.get("/live")
async def live(request: Request, me: SignedInDep) -> StreamingResponse:
    """Your machines (online, capacity in use) and job counts, sent when they change."""
    hub = hub_of(request)

    async def stream() -> AsyncIterator[bytes]:
        last: dict[str, Any] | None = None
        quiet, tick = 0.0, 0
        jobs: dict[str, Any] = {}
        while True:
            if tick % 2 == 0:  # the database is asked every other tick, memory every tick
                summary = await hub.jobs.summary(me.user.id)
                jobs = {"counts": summary["counts"], "active": summary["active"]}
            state = {**_live_state(request, me), "jobs": jobs}
            # last_seen moves with every heartbeat; alone it is not worth a push
            comparable = {**state, "machines": [{**m, "last_seen": None} for m in state["machines"]]}
            if comparable != last:
                last, quiet = comparable, 0.0
                yield _event("state", state)
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(LIVE_INTERVAL_S)
            quiet += LIVE_INTERVAL_S
            tick += 1

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_SSE_HEADERS)


# --------------------------------------------------------------------------- admin


@router.get("/admin/users")
async def admin_users(request: Request, me: AdminDep) -> dict[str, Any]:
    return await management.admin_list_users(hub_of(request), me.principal)


@router.post("/admin/users", status_code=201)
async def admin_create_user(request: Request, me: AdminDep, body: UserCreate) -> JSONResponse:
    return JSONResponse(
        await management.admin_create_user(hub_of(request), me.principal, body), status_code=201
    )


@router.post("/admin/users/{user_id}/invite")
async def admin_invite(user_id: str, request: Request, me: AdminDep) -> dict[str, Any]:
    return await management.admin_invite(hub_of(request), me.principal, user_id, base_url(request))


@router.post("/admin/users/{user_id}/disable")
async def admin_disable(user_id: str, request: Request, me: AdminDep) -> dict[str, Any]:
    return await management.admin_set_disabled(hub_of(request), me.principal, user_id, True)


@router.post("/admin/users/{user_id}/enable")
async def admin_enable(user_id: str, request: Request, me: AdminDep) -> dict[str, Any]:
    return await management.admin_set_disabled(hub_of(request), me.principal, user_id, False)


# --------------------------------------------------------------------------- playground


def _inference(endpoint: Endpoint) -> Callable[..., Awaitable[Response]]:
    async def handle(request: Request, me: SignedInDep) -> Response:
        hub = hub_of(request)
        # Session calls share one per-user allowance, as a key would have its own.
        rate = await hub.limiter.admit(f"session:{me.user.id}")
        response = await answer(request, hub, me.principal, endpoint)
        if rate is not None:
            response.headers.update(rate.headers())
        return response

    handle.__name__ = "dashboard_" + endpoint.name.replace(".", "_")
    return handle


for _endpoint in ENDPOINTS:
    router.add_api_route(_endpoint.path, _inference(_endpoint), methods=["POST"], response_model=None)
