"""Reading request bodies into :mod:`services.bodies` types, with clear 4xx answers."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from inference_club.domain.endpoints import Endpoint
from inference_club.errors import (
    InvalidRequest,
    MalformedBody,
    RequestTooLarge,
    UnsupportedMediaType,
)
from inference_club.services.bodies import JsonBody, MultipartBody, UploadPart

_SPOOL_IN_MEMORY = 1024 * 1024


def _check_declared_size(request: Request) -> None:
    state = request.scope.get("state", {})
    if "body_too_large" in state:
        raise RequestTooLarge(
            f"Request body of {state['body_too_large']} bytes exceeds the limit of {state['body_limit']} bytes."
        )


async def read_json(request: Request) -> JsonBody:
    _check_declared_size(request)
    raw = await request.body()
    if not raw.strip():
        raise MalformedBody("Request body is empty; expected a JSON object.")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedBody("Request body must be a JSON object.")
    return JsonBody(raw, data)


async def read_multipart(request: Request, *, max_files: int = 16, max_fields: int = 64) -> MultipartBody:
    _check_declared_size(request)
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except (MultiPartException, MultipartParseError) as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc}", param="body") from None
    except AssertionError as exc:  # starlette asserts on some broken inputs
        raise InvalidRequest(f"Malformed multipart body: {exc}", param="body") from None
    fields: list[tuple[str, str]] = []
    files: list[UploadPart] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            spooled = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
            size = 0
            while chunk := await value.read(256 * 1024):
                spooled.write(chunk)
                size += len(chunk)
            await value.close()
            files.append(
                UploadPart(
                    field=name,
                    filename=value.filename or name,
                    content_type=value.content_type or "application/octet-stream",
                    file=spooled,
                    size=size,
                )
            )
        else:
            fields.append((name, value))
    return MultipartBody(fields, files)


async def read_inference_body(
    request: Request, endpoint: Endpoint, *, default_model: Callable[[], str | None] | None = None
) -> tuple[JsonBody | MultipartBody, str]:
    """Parse and validate an inference body; returns it with the model it names.

    ``default_model`` picks a model where the endpoint lets the client omit it.
    """
    content_type = request.headers.get("content-type", "").lower()
    # Form posts without files arrive url-encoded; they are forwarded as multipart all the same.
    is_multipart = content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    takes_json = endpoint.body.value in ("json", "json_or_multipart")
    takes_multipart = endpoint.body.value in ("multipart", "json_or_multipart")
    if is_multipart and not takes_multipart:
        raise UnsupportedMediaType(f"{endpoint.path} takes a JSON body, not multipart.", param="content-type")
    if not is_multipart and not takes_json:
        raise UnsupportedMediaType(
            f"{endpoint.path} takes multipart/form-data (file uploads).", param="content-type"
        )
    if not is_multipart:
        body = await read_json(request)
        return body, endpoint.validate(body.data, default_model=default_model)
    form = await read_multipart(request)
    try:
        if form.get("async") is not None or any(p.field == "async" for p in form.files):
            # Whatever its value: a form post never queues, so saying "false" is refused too,
            # with the reason rather than a type error about booleans.
            raise InvalidRequest(
                f"{endpoint.path} is synchronous only; `async` is not accepted with file uploads.",
                param="async",
            )
        data: dict[str, Any] = dict(form.fields)
        for part in form.files:
            data.setdefault(part.field, part.filename)
        for alternatives in endpoint.uploads.required:
            if not any(p.field in alternatives for p in form.files):
                raise InvalidRequest(f"'{alternatives[0]}' file is required.", param=alternatives[0])
        accepted = endpoint.uploads.accepted
        if accepted:
            for part in form.files:
                if not part.content_type.lower().startswith(accepted):
                    raise UnsupportedMediaType(
                        f"'{part.field}' of type {part.content_type!r} is not accepted here.",
                        param=part.field,
                    )
        if "stream" in data:
            data["stream"] = data["stream"].lower() == "true"
        return form, endpoint.validate(data, default_model=default_model)
    except BaseException:
        form.close()
        raise
