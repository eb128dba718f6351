"""The dashboard's pages, server-rendered over the same services as the API."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from inference_club.domain.jobs import JobStatus
from inference_club.services.catalog import reachable_models
from inference_club.services.job_events import job_public
from inference_club.surfaces.dashboard.media import media_kind, signed_url
from inference_club.surfaces.dashboard.security import AdminDep, PageRoute, SignedInDep, hub_of, page
from inference_club.surfaces.http.deps import base_url
from inference_club.surfaces.http.management import admin_list_users, list_keys_of, list_providers_of

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 50
MODALITIES = ("text", "embedding", "audio", "image", "video", "mesh")
FILE_KINDS = {"image": "image/", "audio": "audio/", "video": "video/", "3d": "model/"}


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _result_text(result: Any) -> str | None:
    """The readable part of a JSON answer: a chat reply, a completion, a transcript."""
    if not isinstance(result, dict):
        return None
    choices = result.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return str(message["content"])
        if isinstance(choices[0].get("text"), str):
            return str(choices[0]["text"])
    if isinstance(result.get("text"), str):
        return str(result["text"])
    return None


@router.get("/")
@router.get("/dashboard")
async def overview(request: Request, me: SignedInDep) -> Response:
    hub = hub_of(request)
    machines = list_providers_of(hub, me.principal)["data"]
    models = reachable_models(hub.registry, me.principal, window_s=hub.settings.online_window_s)
    summary = await hub.jobs.summary(me.user.id)
    usage = await hub.usage_reports.by_hour(me.user.id, hours=24)
    hours, totals = usage["hours"], usage["total"]
    peak = max((h["requests"] for h in hours), default=0) or 1
    return page(
        request,
        me,
        "overview.html",
        machines=machines,
        models=models,
        summary=summary,
        hours=hours,
        peak=peak,
        totals=totals,
    )


@router.get("/dashboard/settings/token")
async def token_settings(request: Request, me: SignedInDep) -> Response:
    keys = (await list_keys_of(hub_of(request), me.principal))["data"]
    return page(request, me, "token.html", keys=keys, hub_url=base_url(request))


@router.get("/dashboard/machines")
async def machines(request: Request, me: SignedInDep) -> Response:
    data = list_providers_of(hub_of(request), me.principal)["data"]
    return page(request, me, "machines.html", machines=data, hub_url=base_url(request))


@router.get("/dashboard/models")
async def models(
    request: Request, me: SignedInDep, modality: str | None = Query(None, max_length=32)
) -> Response:
    hub = hub_of(request)
    data = reachable_models(
        hub.registry, me.principal, window_s=hub.settings.online_window_s, with_source=True
    )
    if modality:
        data = [m for m in data if modality in m["input_modalities"] or modality in m["output_modalities"]]
    data.sort(key=lambda m: (m["service_type"], m["id"]))
    return page(request, me, "models.html", models=data, modality=modality or "", modalities=MODALITIES)


@router.get("/dashboard/jobs")
async def jobs(
    request: Request,
    me: SignedInDep,
    status: str | None = Query(None, max_length=64),
    after: str | None = Query(None, max_length=64),
) -> Response:
    statuses = [s for s in (status or "").upper().split(",") if s in JobStatus.__members__]
    rows = await hub_of(request).jobs.list_jobs(
        me.user.id, statuses=statuses, active=False, batch_id=None, limit=PAGE_SIZE + 1, after=after
    )
    data = [job_public(j, with_result=False) for j in rows[:PAGE_SIZE]]
    next_after = data[-1]["id"] if len(rows) > PAGE_SIZE else None
    return page(
        request,
        me,
        "jobs.html",
        jobs=data,
        status=",".join(statuses),
        statuses=list(JobStatus),
        next_after=next_after,
    )


@router.get("/dashboard/jobs/{job_id}")
async def job_detail(job_id: str, request: Request, me: SignedInDep) -> Response:
    hub = hub_of(request)
    job = await hub.jobs.get(me.user.id, job_id)
    data = job_public(job)
    media = [
        {**f, "kind": media_kind(str(f.get("content_type", ""))), "src": signed_url(hub, str(f["id"]))}
        for f in data["files"]
        if isinstance(f, dict) and f.get("id")
    ]
    return page(
        request,
        me,
        "job.html",
        job=data,
        request_json=_pretty(job.body),
        result_text=_result_text(data.get("result")),
        result_json=_pretty(data["result"]) if data.get("result") is not None and not media else None,
        error_json=_pretty(data["error"]) if data.get("error") else None,
        media=media,
    )


@router.get("/dashboard/batches")
async def batches(
    request: Request, me: SignedInDep, after: str | None = Query(None, max_length=64)
) -> Response:
    rows = await hub_of(request).batches.list_batches(me.principal, limit=PAGE_SIZE + 1, after=after)
    data = rows[:PAGE_SIZE]
    next_after = data[-1]["id"] if len(rows) > PAGE_SIZE else None
    return page(request, me, "batches.html", batches=data, next_after=next_after)


@router.get("/dashboard/batches/{batch_id}")
async def batch_detail(batch_id: str, request: Request, me: SignedInDep) -> Response:
    batch = await hub_of(request).batches.get(me.principal, batch_id)
    return page(request, me, "batch.html", batch=batch)


@router.get("/dashboard/files")
async def files(
    request: Request,
    me: SignedInDep,
    kind: str | None = Query(None, max_length=16),
    after: str | None = Query(None, max_length=64),
) -> Response:
    hub = hub_of(request)
    prefix = FILE_KINDS.get(kind or "")
    rows = await hub.files.list(user_id=me.user.id, limit=PAGE_SIZE + 1, after=after, content_prefix=prefix)
    data = [
        {
            "id": r.id,
            "filename": r.filename,
            "content_type": r.content_type,
            "bytes": r.bytes,
            "created_at": r.created_at,
            "kind": media_kind(r.content_type),
            "src": signed_url(hub, r.id),
        }
        for r in rows[:PAGE_SIZE]
    ]
    next_after = data[-1]["id"] if len(rows) > PAGE_SIZE else None
    return page(
        request,
        me,
        "files.html",
        files=data,
        kind=kind if prefix else "",
        kinds=list(FILE_KINDS),
        next_after=next_after,
    )


@router.get("/dashboard/files/{file_id}")
async def file_detail(file_id: str, request: Request, me: SignedInDep) -> Response:
    hub = hub_of(request)
    record = await hub.files.get(file_id, user_id=me.user.id)
    data = {
        "id": record.id,
        "filename": record.filename,
        "content_type": record.content_type,
        "bytes": record.bytes,
        "created_at": record.created_at,
        "purpose": record.purpose,
        "kind": media_kind(record.content_type),
        "src": signed_url(hub, record.id),
    }
    return page(request, me, "file.html", file=data)


@router.get("/dashboard/playground")
async def playground(request: Request, me: SignedInDep) -> Response:
    hub = hub_of(request)
    data = reachable_models(hub.registry, me.principal, window_s=hub.settings.online_window_s)
    by_type: dict[str, list[str]] = {}
    for model in data:
        for service_type in model["service_types"]:
            by_type.setdefault(service_type, []).append(model["id"])
    return page(request, me, "playground.html", models=by_type)


@router.get("/dashboard/admin")
async def admin(request: Request, me: AdminDep) -> Response:
    hub = hub_of(request)
    users = (await admin_list_users(hub, me.principal))["data"]
    machines = list_providers_of(hub, me.principal, everyone=True)["data"]
    names = {u["id"]: u["username"] for u in users}
    summary = await hub.jobs.summary(None)
    return page(request, me, "admin.html", users=users, machines=machines, owners=names, summary=summary)
