"""``/v1`` inference routes, one per entry of the endpoint table. Thin: read, call, answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from inference_club.domain.endpoints import BY_NAME, ENDPOINTS, Endpoint
from inference_club.errors import HubError, InvalidRequest
from inference_club.services.auth import Principal
from inference_club.services.bodies import MultipartBody
from inference_club.services.container import Hub
from inference_club.services.executors import Call
from inference_club.surfaces.http.deps import (
    HubDep,
    PrincipalDep,
    base_url,
    hub_and_caller,
    request_id,
)
from inference_club.surfaces.http.disconnect import unless_disconnected
from inference_club.surfaces.http.fast_path import FastRoute
from inference_club.surfaces.http.jobs import accept_job
from inference_club.surfaces.http.reading import read_inference_body
from inference_club.surfaces.http.schemas import request_body_doc, response_doc

router = APIRouter(tags=["inference"])


def _handler(endpoint: Endpoint) -> Callable[..., Awaitable[Response]]:
    # The request alone, no dependencies: served by fast_path, where FastAPI resolves none.
    async def handle(request: Request) -> Response:
        hub, principal = await hub_and_caller(request)
        rate = await hub.limiter.admit(principal.key_id)
        try:
            response = await answer(request, hub, principal, endpoint)
        except HubError as exc:
            if rate is not None:  # an error answer still tells what is left of the limits
                exc.headers = {**rate.headers(), **exc.headers}
            raise
        if rate is not None:
            response.headers.update(rate.headers())
        return response

    handle.__name__ = endpoint.name.replace(".", "_")
    return handle


async def answer(request: Request, hub: Hub, principal: Principal, endpoint: Endpoint) -> Response:
    """One inference call of ``principal`` (the dashboard's playground uses it too)."""
    # Multipart uploads are spooled to temporary files that vanish when the body is dropped.
    body, model = await read_inference_body(
        request, endpoint, default_model=lambda: hub.router.default_model(principal, endpoint)
    )
    if body.get("async") is True:
        if not endpoint.async_capable or isinstance(body, MultipartBody):
            raise InvalidRequest(
                f"{endpoint.path} is synchronous only; `async` is not accepted with file uploads.",
                param="async",
            )
        return await accept_job(request, hub, principal, endpoint, model, body)
    # The router answers no_provider itself; candidates are computed once, there.
    call = Call(
        principal=principal,
        endpoint=endpoint,
        model=model,
        body=body.without("async"),
        request_id=request_id(request),
        base_url=base_url(request),
    )
    return await unless_disconnected(request, hub.executors.for_endpoint(endpoint).respond(call))


for _endpoint in ENDPOINTS:
    router.add_api_route(
        _endpoint.path,
        _handler(_endpoint),
        methods=["POST"],
        summary=_endpoint.summary,
        operation_id=_endpoint.name.replace(".", "_"),
        openapi_extra=request_body_doc(_endpoint),
        responses=response_doc(_endpoint),
        response_model=None,
    )


def fast_routes() -> dict[str, FastRoute]:
    """The endpoint table's routes for :mod:`fast_path`: path → the registered route and its handler."""
    paths = {endpoint.path for endpoint in ENDPOINTS}
    return {
        route.path: FastRoute(route=route, handler=route.endpoint)
        for route in router.routes
        if isinstance(route, APIRoute) and route.path in paths and "POST" in (route.methods or ())
    }


@router.get("/v1/audio/voices", summary="Voices a text-to-speech model offers.", response_model=None)
async def list_voices(
    request: Request,
    hub: HubDep,
    principal: PrincipalDep,
    model: str = Query(..., min_length=1, description="The TTS model to ask."),
) -> Response:
    endpoint = BY_NAME["audio.speech"]
    call = Call(
        principal=principal,
        endpoint=endpoint,
        model=model,
        body=None,
        request_id=request_id(request),
        base_url=base_url(request),
        method="GET",
        path="/v1/audio/voices",
        query=request.url.query,
    )
    return await unless_disconnected(request, hub.executors.relay.respond(call))
