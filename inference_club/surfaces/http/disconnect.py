"""Cancel work whose client went away, from the first wait for the provider to the last byte.

Nobody listens for ``http.disconnect`` while a route waits for the provider's first
byte, so the upstream request would run on; and Starlette's streaming response watches
for it with a task group of its own. :func:`unless_disconnected` does both with one
watch per request (with no task of its own under the hub's HTTP protocol, which tells
of a client leaving): the work runs in the request's own task, and the watch cancels
that task when the client leaves, before the answer starts (the caller gets
:class:`ClientDisconnect`) or while a streamed answer is being sent (the stream stops
quietly, as Starlette's does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from inference_club.http_server import BODY, BODY_BYTES, DISCONNECT
from inference_club.waiting import OwnerWatch


class DisconnectWatch(OwnerWatch):
    """Cancels its owner when the client leaves: told so by the hub's HTTP protocol
    (``http_server.DISCONNECT``), or, under another server, by a task reading the
    request's messages until ``http.disconnect``."""

    def __init__(self, request: Request) -> None:
        self._receive = request.receive
        hook = request.scope.get("extensions", {}).get(DISCONNECT)
        super().__init__(in_task=hook is None)
        self._unlisten = None if hook is None else hook["on_disconnect"](self._fire)

    async def _until(self) -> bool:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        return True

    def stop(self) -> None:
        super().stop()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None


class WatchedStreamingResponse(Response):
    """A streaming answer sent under the request's :class:`DisconnectWatch`.

    Shares the status and header list of the response it wraps (headers added to it
    later still go out); the body is the wrapped response's iterator, sent in this task.
    """

    def __init__(self, inner: StreamingResponse, watch: DisconnectWatch) -> None:
        self.inner = inner
        self.watch = watch
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = inner.background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = scope.get("extensions", {}).get(BODY)
        try:
            if body is None:
                await self.inner.stream_response(send)
            else:
                await self._stream_past_middleware(send, body["send_body"])
        except asyncio.CancelledError:
            if not self.watch.absorb():
                raise
            return  # the client left: nothing more to send
        finally:
            self.watch.stop()
        if self.background is not None:
            await self.background()

    async def _stream_past_middleware(
        self, send: Send, send_body: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """As ``stream_response``, the body's parts sent with ``BODY``'s ``send_body``: a
        relayed stream is many small parts, and no middleware of the hub looks at them."""
        inner = self.inner
        await send({"type": "http.response.start", "status": inner.status_code, "headers": inner.raw_headers})
        sent = 0
        async for chunk in inner.body_iterator:
            if isinstance(chunk, bytes):
                data = chunk
            elif isinstance(chunk, memoryview):
                data = bytes(chunk)
            else:
                data = chunk.encode(inner.charset)
            sent += len(data)
            await send_body(data)
        await send({"type": "http.response.body", "body": b"", "more_body": False, BODY_BYTES: sent})


async def unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """Run ``work``; if the client disconnects first, cancel it and raise ClientDisconnect.

    A streaming response returned by ``work`` comes back wrapped, so the same watch
    covers its body.
    """
    watch = DisconnectWatch(request)
    try:
        result = await work
    except asyncio.CancelledError:
        if watch.absorb():
            raise ClientDisconnect() from None
        raise
    except BaseException:
        watch.stop()
        raise
    if isinstance(result, StreamingResponse):
        return WatchedStreamingResponse(result, watch)
    watch.stop()
    return result
