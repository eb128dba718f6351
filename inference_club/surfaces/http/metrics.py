"""``GET /metrics``: Prometheus text, for ``IC_METRICS_TOKEN`` or an administrator's key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from inference_club.errors import AuthError
from inference_club.services.metrics import HubMetrics
from inference_club.surfaces.http.deps import HubDep

router = APIRouter(tags=["health"])

_bearer = HTTPBearer(auto_error=False, description="`IC_METRICS_TOKEN`, or an administrator's API key.")
_REFUSED = "GET /metrics needs IC_METRICS_TOKEN or an administrator's API key as the bearer token."


@router.get(
    "/metrics",
    summary="Prometheus metrics of this hub process (IC_METRICS_TOKEN or an administrator's key).",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition format.", "content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "No metrics token and no administrator's key."},
    },
)
async def metrics(
    request: Request,
    hub: HubDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    token = hub.settings.metrics_token
    presented = credentials.credentials if credentials is not None else ""
    if not (token and presented and hmac.compare_digest(presented.encode(), token.encode())):
        if not presented:
            raise AuthError(_REFUSED)
        principal = await hub.auth.authenticate(request.headers.get("authorization"))
        if not principal.is_admin:
            raise AuthError(_REFUSED)
    collected: HubMetrics = request.app.state.metrics
    await collected.refresh()
    return Response(generate_latest(collected.registry), media_type=CONTENT_TYPE_LATEST)
