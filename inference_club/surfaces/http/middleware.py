"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and hide disconnects)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.errors import RequestTooLarge


class TrailingSlashMiddleware:
    """Routes answer with and without a trailing slash: ``/v1/models/`` is ``/v1/models``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope)
                scope["path"] = path.rstrip("/") or "/"
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Counts body bytes as they arrive and stops at the limit (413), never buffering first.

    Requests relayed by another hub replica (``/internal/``) are left alone: their body
    was limited where the client sent it, and their content type is not the client's.
    """

    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS")
            or scope["path"].startswith("/internal/")
        ):
            await self.app(scope, receive, send)
            return
        content_type = b""
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        limit = self.upload_limit if content_type.startswith(b"multipart/") else self.json_limit
        scope.setdefault("state", {})["body_limit"] = limit
        if declared is not None and declared > limit:
            scope["state"]["body_too_large"] = declared
        received = 0
        state = scope["state"]

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                state["body_bytes"] = received  # for the request's log line
                if received > limit:
                    raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            return message

        await self.app(scope, counting_receive, send)
