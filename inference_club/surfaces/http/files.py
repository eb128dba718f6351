"""``/v1/files``: uploads and generated media, owner-only or via a signed link."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import RedirectResponse, Response, StreamingResponse

from inference_club.domain.web_content import user_content_headers
from inference_club.errors import InvalidRequest, NotFound
from inference_club.services.files import file_public, file_url
from inference_club.surfaces.http.deps import HubDep, PrincipalDep, base_url, get_principal
from inference_club.surfaces.http.envelopes import page
from inference_club.surfaces.http.reading import read_multipart

router = APIRouter(tags=["files"])


class FileShare(BaseModel):
    expires_in: int = Field(3600, ge=1, le=7 * 24 * 3600, description="Seconds the link stays valid.")


@router.post(
    "/v1/files",
    summary="Upload a file (multipart: `file`, optional `purpose`).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    form = await read_multipart(request, max_files=1)
    part = next((p for p in form.files if p.field == "file"), None)
    if part is None:
        raise InvalidRequest("'file' is required.", param="file")
    record = await hub.files.save(
        user_id=principal.user_id,
        data=part.chunks(),
        content_type=part.content_type,
        purpose=form.get("purpose") or "upload",
        filename=part.filename,
    )
    form.close()
    return file_public(record, base_url(request))


@router.get("/v1/files", summary="List your files, newest first.")
async def list_files(
    request: Request,
    hub: HubDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=200),
    after: str | None = Query(None, description="Cursor: the last id of the previous page."),
) -> dict[str, Any]:
    records = await hub.files.list(user_id=principal.user_id, limit=limit + 1, after=after)
    return page([file_public(r, base_url(request)) for r in records], limit)


@router.get("/v1/files/{file_id}", summary="A file's metadata.")
async def get_file(file_id: str, request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return file_public(await hub.files.get(file_id, user_id=principal.user_id), base_url(request))


@router.get(
    "/v1/files/{file_id}/content",
    summary="A file's bytes (owner's key, or a signed link's `exp` and `sig`).",
    response_class=StreamingResponse,
    responses={307: {"description": "Presigned redirect to the object store (`IC_S3_PRESIGNED_DOWNLOADS`)."}},
)
async def file_content(
    file_id: str,
    request: Request,
    hub: HubDep,
    exp: int | None = Query(None, description="Signed link: expiry (Unix seconds)."),
    sig: str | None = Query(None, description="Signed link: signature."),
) -> Response:
    if exp is not None and sig is not None:
        if not hub.files.check_signature(file_id, exp, sig):
            raise NotFound(f"No file with id {file_id!r}, or the link expired.", param="file_id")
        record = await hub.files.get(file_id, user_id=None)
    else:
        principal = await get_principal(request, None)
        record = await hub.files.get(file_id, user_id=principal.user_id)
    # Access is checked above either way; a redirect only hands the byte-pushing to the store.
    if (redirect := hub.files.download_redirect(record)) is not None:
        return RedirectResponse(redirect, status_code=307, headers={"cache-control": "no-store"})
    headers = user_content_headers(record.content_type, record.filename)
    headers["content-length"] = str(record.bytes)
    return StreamingResponse(await hub.files.open_content(record), headers=headers)


@router.post("/v1/files/{file_id}/share", summary="A signed, expiring link to a file.")
async def share_file(
    file_id: str, request: Request, hub: HubDep, principal: PrincipalDep, body: FileShare | None = None
) -> dict[str, Any]:
    await hub.files.get(file_id, user_id=principal.user_id)
    link = hub.files.sign(file_id, expires_in_s=(body or FileShare()).expires_in)
    return {"url": f"{file_url(base_url(request), file_id)}?{link.query()}", "expires_at": link.exp}


@router.delete("/v1/files/{file_id}", summary="Delete a file.")
async def delete_file(file_id: str, request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    await hub.files.delete(file_id, user_id=principal.user_id)
    return {"id": file_id, "object": "file", "deleted": True}
