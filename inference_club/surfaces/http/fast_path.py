"""The inference routes without FastAPI's per-request routing machinery.

Every relayed call is a POST to one of a few fixed paths, and its handler takes the bare
request (see ``inference._handler``). FastAPI would still try the app's routers in turn,
wrap the call in two exit stacks and resolve an empty set of dependencies: together more
CPU than the rest of the hub's part of a relayed call. Here one dictionary lookup finds
the handler instead. Everything else (other methods, other paths) goes to the router
unchanged, and the routes stay registered there for the API document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FastRoute:
    route: BaseRoute  # the registered route: what the request observer reports as the template
    handler: Handler


class FastPath:
    """POST to a path of ``routes`` → its handler; anything else → ``app`` (the router)."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, FastRoute]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root + "/"):  # served under a prefix: match what follows it
                path = path[len(root) :]
            fast = self.routes.get(path)
            if fast is not None:
                scope["route"] = fast.route
                response = await fast.handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, routes: Mapping[str, FastRoute]) -> None:
    """In front of the app's router, inside its exception middleware: an error raised by a
    handler is rendered exactly as for any other route."""
    app.router.middleware_stack = FastPath(app.router.middleware_stack, routes)
