"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and hide disconnects)."""

from __future__ import annotations

import asyncio

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


# An answer given before the request body is in (a 401, 429 or 404 decided from the head)
# first reads what is left of the body, up to this much for this long. Otherwise a proxy in
# front (nginx with request buffering off) closes the client's kept-alive connection after
# an answer that promised to keep it, and the client's next request on it fails unanswered.
SETTLE_MAX_BYTES = 1 << 20
SETTLE_TIMEOUT_S = 2.0


class BodyLimitMiddleware:
    """Counts body bytes as they arrive and stops at the limit (413), never buffering first.

    An answer that starts before the body has arrived reads the rest first (see
    ``SETTLE_MAX_BYTES``); a body too big or too slow for that, or one the app is reading
    at that moment, gets ``Connection: close`` on the answer, so no client reuses the
    connection.

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
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        limit = self.upload_limit if content_type.startswith(b"multipart/") else self.json_limit
        scope.setdefault("state", {})["body_limit"] = limit
        if declared is not None and declared > limit:
            scope["state"]["body_too_large"] = declared
        received = 0
        state = scope["state"]
        body_done = not chunked and not declared
        reading = 0  # receive() calls in progress

        async def counting_receive() -> Message:
            nonlocal received, body_done, reading
            reading += 1
            try:
                message = await receive()
            finally:
                reading -= 1
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                state["body_bytes"] = received  # for the request's log line
                if not message.get("more_body", False):
                    body_done = True
                if received > limit:
                    raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            else:
                body_done = True  # the client left: nothing more comes
            return message

        async def settle() -> bool:
            """Read the rest of an unread body; False when it is too big, too slow or gone."""
            nonlocal body_done
            if declared is not None and declared - received > SETTLE_MAX_BYTES:
                return False
            drained = 0
            try:
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    while not body_done:
                        message = await receive()
                        if message["type"] != "http.request":
                            return False
                        drained += len(message.get("body", b""))
                        if drained > SETTLE_MAX_BYTES:
                            return False
                        body_done = not message.get("more_body", False)
            except TimeoutError:
                return False
            return True

        async def settling_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                if reading or not await settle():
                    message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
            await send(message)

        await self.app(scope, counting_receive, settling_send)
