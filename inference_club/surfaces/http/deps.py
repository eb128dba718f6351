"""Dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

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


def base_url(request: Request) -> str:
    configured = get_hub(request).settings.public_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/")


async def _hub(request: Request) -> Hub:
    # async, so FastAPI does not hop to a worker thread for it on every request
    return get_hub(request)


HubDep = Annotated[Hub, Depends(_hub)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
