"""The inference routes are found by one lookup and pass the app's own middleware; everything
else goes the ordinary way."""

from __future__ import annotations

import httpx
from fastapi import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.domain.endpoints import ENDPOINTS
from inference_club.errors import InvalidRequest
from inference_club.surfaces.http import error_handlers, inference, jobs
from inference_club.surfaces.http.fast_path import FastRoute, HubApp


class Tagging:
    """A middleware that marks every answer, to see that the short way passes it too."""

    def __init__(self, app: ASGIApp, tag: str) -> None:
        self.app = app
        self.tag = tag.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-tag", self.tag)]
            await send(message)

        await self.app(scope, receive, tagged)


def app_with_fast_route() -> tuple[HubApp, list[str]]:
    app = HubApp()
    error_handlers.install(app)
    calls: list[str] = []

    async def relay(request: Request) -> Response:
        calls.append(request.scope["route"].path)
        assert request.app is app
        failure = request.query_params.get("fail")
        if failure == "hub":
            raise InvalidRequest("bad model", param="model")
        if failure == "bug":
            raise ZeroDivisionError("a bug")
        return JSONResponse({"via": "fast"})

    async def routed(request: Request) -> Response:
        return JSONResponse({"via": "router"})

    app.add_api_route("/v1/things", relay, methods=["POST"])
    app.add_api_route("/v1/things", routed, methods=["GET"])
    app.add_api_route("/v1/other", routed, methods=["POST"])

    async def watch(request: Request) -> Response:
        calls.append(request.scope["route"].path)
        return JSONResponse({"via": "fast", "thing": request.path_params["thing_id"]})

    app.add_api_route("/v1/things/{thing_id}/events", watch, methods=["GET"])
    app.add_middleware(Tagging, tag="inner")
    app.add_middleware(Tagging, tag="outer")
    registered = next(r for r in app.router.routes if getattr(r, "path", "") == "/v1/things")
    events = next(r for r in app.router.routes if getattr(r, "path", "").endswith("/events"))
    app.use_fast_routes(
        {"/v1/things": FastRoute(route=registered, handler=relay)}, [FastRoute(route=events, handler=watch)]
    )
    return app, calls


async def test_a_post_to_a_fast_route_reaches_its_handler_with_the_route_noted() -> None:
    app, calls = app_with_fast_route()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answer = await http.post("/v1/things")
        assert (await http.post("/v1/things/")).status_code == 200  # with a trailing slash too
    assert answer.json() == {"via": "fast"} and calls == ["/v1/things", "/v1/things"]
    assert answer.headers.get_list("x-tag") == ["inner", "outer"]  # the app's middleware, in order


async def test_a_get_matching_a_templated_fast_route_gets_its_path_parameters() -> None:
    app, calls = app_with_fast_route()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answer = await http.get("/v1/things/t%C3%A9-1/events/")
        assert (await http.get("/v1/things/a/b/events")).status_code == 404  # one segment only
        assert (await http.post("/v1/things/t1/events")).status_code == 405  # GET only
    assert answer.json() == {"via": "fast", "thing": "té-1"}
    assert calls == ["/v1/things/{thing_id}/events"]
    assert answer.headers.get_list("x-tag") == ["inner", "outer"]


async def test_other_methods_and_paths_go_through_the_router() -> None:
    app, calls = app_with_fast_route()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        routed = await http.get("/v1/things")
        assert routed.json() == {"via": "router"} and routed.headers.get_list("x-tag") == ["inner", "outer"]
        assert (await http.post("/v1/other")).json() == {"via": "router"}
        assert (await http.put("/v1/things")).status_code == 405
        assert (await http.post("/v1/nothing")).status_code == 404
    assert calls == []


async def test_an_error_from_a_fast_route_is_rendered_like_any_other() -> None:
    app, _ = app_with_fast_route()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answer = await http.post("/v1/things?fail=hub")
        bug = await http.post("/v1/things?fail=bug")
    assert bug.status_code == 500 and bug.json()["error"]["type"] == "server_error"
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": "bad model",
        "type": "invalid_request",
        "param": "model",
        "code": None,
    }


async def test_a_hub_served_under_a_root_path_still_finds_the_route() -> None:
    app, calls = app_with_fast_route()
    transport = httpx.ASGITransport(app=app, root_path="/hub")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.post("/hub/v1/things")).json() == {"via": "fast"}
    assert calls == ["/v1/things"]


def test_every_inference_endpoint_and_the_job_event_stream_take_the_fast_path() -> None:
    routes = inference.fast_routes()
    assert set(routes) == {endpoint.path for endpoint in ENDPOINTS}
    assert all(getattr(fast.route, "path", None) == path for path, fast in routes.items())
    assert [getattr(fast.route, "path", None) for fast in jobs.fast_routes()] == ["/v1/jobs/{job_id}/events"]
