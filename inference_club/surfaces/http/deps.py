"""Dependency aliases shared by the routes."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from inference_club.services.auth import Principal
from inference_club.services.container import Hub

_bearer = HTTPBearer(auto_error=False, description="Your API key: `Authorization: Bearer <key>`.")


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(request)


async def authenticate(request: Request) -> Principal:
    """The caller of ``request`` (the Authorization header), noted for the request's log line."""
    principal = await get_hub(request).auth.authenticate(request.headers.get("authorization"))
    facts = request.scope.get("state", {}).get("facts")
    if facts is not None:
        facts.user_id = principal.user_id
    return principal


async def hub_and_caller(request: Request) -> tuple[Hub, Principal]:
    """HubDep and PrincipalDep in one call, for handlers that take the bare request
    (the routes of ``fast_path``, where FastAPI resolves no dependencies)."""
    return get_hub(request), await authenticate(request)


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


_MEMO_HOST_BYTES = 300  # a DNS name (253) with a port


def base_url(request: Request) -> str:
    configured = get_hub(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    scope = request.scope
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = bytes(value)
            break
    if host is not None and len(host) > _MEMO_HOST_BYTES:  # no real host is this long: not kept
        return str(request.base_url).rstrip("/")
    server = scope.get("server")
    return _base_url(
        scope.get("scheme", "http"),
        host,
        None if server is None else tuple(server),
        scope.get("app_root_path", scope.get("root_path", "")),
    )


@lru_cache(maxsize=256)
def _base_url(scheme: str, host: bytes | None, server: tuple[Any, ...] | None, root_path: str) -> str:
    """Starlette's ``request.base_url`` (it judges the Host header), without a copy of the
    scope and a URL object on every relayed call: it depends on these parts alone."""
    scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "root_path": root_path,
        "path": "/",
        "query_string": b"",
        "headers": [] if host is None else [(b"host", host)],
    }
    return str(Request(scope).base_url).rstrip("/")


async def _hub(request: Request) -> Hub:
    # async, so FastAPI does not hop to a worker thread for it on every request
    return get_hub(request)


HubDep = Annotated[Hub, Depends(_hub)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
