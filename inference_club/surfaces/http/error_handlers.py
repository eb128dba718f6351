"""The one place where errors become HTTP answers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from inference_club.errors import HubError, InvalidRequest

log = logging.getLogger("inference_club.http")


def render(error: HubError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


def _param_from_loc(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "body")


async def _hub_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return render(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
    param = _param_from_loc(tuple(first.get("loc", ())))
    return render(InvalidRequest(f"{param}: {first.get('msg', 'invalid value')}", param=param))


_HTTP_TYPES = {404: "not_found", 405: "invalid_request"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (unknown path, wrong method), in both shapes.

    Under ``/v1`` the key is checked first, as on every known route there: a caller
    without a valid key learns nothing about which paths exist.
    """
    assert isinstance(exc, StarletteHTTPException)
    hub = getattr(request.app.state, "hub", None)
    if hub is not None and (request.url.path == "/v1" or request.url.path.startswith("/v1/")):
        try:
            await hub.auth.authenticate(request.headers.get("authorization"))
        except HubError as auth_error:
            return render(auth_error)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    body = {
        "detail": exc.detail,
        "error": {
            "message": detail,
            "type": _HTTP_TYPES.get(exc.status_code, "invalid_request"),
            "param": None,
            "code": None,
        },
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _disconnect(_request: Request, _exc: Exception) -> Response:
    # Nobody is left to read this; answer quietly instead of logging a crash.
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"message": "Internal error.", "type": "server_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=500)


async def answer_for(app: Starlette, request: Request, exc: Exception) -> Response | None:
    """The answer the handlers installed on ``app`` give ``exc``; None when none applies.

    For a way into the app that bypasses its exception middleware (``fast_path``).
    """
    for kind in type(exc).__mro__:
        handler = app.exception_handlers.get(kind)
        if handler is not None:
            answer = await handler(request, exc)
            assert isinstance(answer, Response)
            return answer
    return None


def install(app: FastAPI) -> None:
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _disconnect)
    app.add_exception_handler(Exception, _unexpected)
