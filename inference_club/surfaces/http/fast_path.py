"""The hub's hottest routes without FastAPI's per-request machinery.

Every relayed call is a POST to one of a few fixed paths, and its handler takes the bare
request (see ``inference._handler``). On its way there FastAPI would pass it through
three middlewares of its own, an exception middleware, an exit-stack middleware, the
app's routers tried in turn, two more exit stacks and an empty dependency resolution:
together more CPU than the rest of the hub's part of a relayed call.

:class:`HubApp` sends such a request through the hub's own middleware (the same list,
in the same order) straight to its handler, and renders an error with the handlers the
app installed (``error_handlers``), exactly as the router's way would. Everything else
goes the ordinary way, and the routes stay registered for the API document.

The one GET here is ``/v1/jobs/{job_id}/events``: an event stream stays open for hours,
and the frames of every layer it passed on its way in stay alive as long; thousands of
idle watchers made that a third of their memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.surfaces.http.error_handlers import answer_for

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FastRoute:
    route: BaseRoute  # the registered route: what the request observer reports as the template
    handler: Handler


class HubApp(FastAPI):
    """FastAPI, with a short way for the routes given to :meth:`use_fast_routes`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_posts: dict[str, FastRoute] = {}
        self._fast_gets: list[tuple[APIRoute, FastRoute]] = []
        self._fast_stack: ASGIApp | None = None

    def use_fast_routes(self, posts: Mapping[str, FastRoute], gets: Sequence[FastRoute] = ()) -> None:
        """POSTs by exact path, GETs by their route's path template.

        Call after the app's middleware is added: the short way passes through the same.
        """
        self._fast_posts = dict(posts)
        self._fast_gets = []
        for fast in gets:
            assert isinstance(fast.route, APIRoute), "a templated fast route needs its path pattern"
            self._fast_gets.append((fast.route, fast))
        stack: ASGIApp = _FastEndpoint(self)
        for middleware in reversed(self.user_middleware):
            cls, args, kwargs = middleware
            stack = cls(stack, *args, **kwargs)
        self._fast_stack = stack

    def _fast_route(self, scope: Scope) -> FastRoute | None:
        method = scope["method"]
        if method == "POST":
            return self._fast_posts.get(_route_path(scope))
        if method == "GET" and self._fast_gets:
            path = _route_path(scope)
            for route, fast in self._fast_gets:
                matched = route.path_regex.match(path)
                if matched is not None:
                    convert = route.param_convertors
                    scope["path_params"] = {k: convert[k].convert(v) for k, v in matched.groupdict().items()}
                    return fast
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fast_stack is not None and scope["type"] == "http":
            fast = self._fast_route(scope)
            if fast is not None:
                scope["app"] = self
                scope["route"] = fast.route
                scope["ic.fast_route"] = fast
                await self._fast_stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):  # served under a prefix: match what follows it
        path = path[len(root) :]
    return path.rstrip("/") or "/"  # the trailing slash middleware drops it too


class _FastEndpoint:
    """The handler :class:`HubApp` found; an error before the answer started is rendered."""

    def __init__(self, app: HubApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        request = Request(scope, receive, send)
        try:
            fast: FastRoute = scope["ic.fast_route"]
            response = await fast.handler(request)
            await response(scope, receive, noting_send)
        except Exception as exc:
            answer = None if started else await answer_for(self.app, request, exc)
            if answer is None:
                raise  # mid-answer: the server closes the connection, as for any route
            await answer(scope, receive, send)
