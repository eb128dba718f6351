"""uvicorn's HTTP/1.1 protocol, with an answer's head and first body bytes in one write.

uvicorn writes a response's head and its body in separate system calls, so the peer
wakes up (and, on a small machine, takes the core) once for the head and once more for
the body: for a relayed answer that is a wake-up per hop for nothing. Here the head is
held back until the next write of the same connection, and sent with it; when the app
sends no body in the same step of the event loop (a stream still waiting for its first
chunk), the head leaves alone at the loop's next turn, as before. A streamed part sent
through :data:`BODY` while the head is still held joins it, so a short stream sent in one
step (head, parts, end) is one write.

The hub and the agent's direct transport serve with :class:`HttpProtocol`.

:class:`HttpProtocol` also tells a request's app when its client leaves before the answer
is complete (:data:`DISCONNECT`), so the hub need not keep a task per request reading
``receive`` only to hear ``http.disconnect``.

Its :data:`BODY` lets a streamed answer send each part of its body straight to the
connection, past every middleware that only looks at the head.

The hub's WebSockets (agent tunnels) run on :class:`WebSocketProtocol`: uvicorn's, on the
socket's own transport once upgraded, and with a way for a route to take each binary
message as it is read (:data:`DELIVERY`) instead of as an ASGI ``websocket.receive``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, cast
from weakref import ref

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

DISCONNECT = "inference_club.http.disconnect"
"""The scope extension :class:`HttpProtocol` offers: ``{"on_disconnect": callable}``.

``on_disconnect(callback)`` has ``callback()`` called once if the connection is lost
before the request's answer is complete (at once if it already was), and answers a
function that takes the callback back.
"""

BODY = "inference_club.http.body"
"""The scope extension :class:`HttpProtocol` offers: ``{"send_body": coroutine function}``.

Once the answer's head is out, ``await send_body(data)`` sends ``data`` as the next part
of a chunked body, as an ASGI ``http.response.body`` message with ``more_body`` would,
straight to the connection: no message, and none of the layers it would pass. It waits
while the socket's buffer is full, and sends nothing once the client has gone (the app
hears of that through :data:`DISCONNECT`), as uvicorn's ``send`` does. Before the head,
after the end, or for a body that is not chunked (it has a ``content-length``) it sends
the ASGI message instead, with the same answer.

A middleware that rewrites bodies must take the extension out of the scope. One that
counts them finds the bytes sent this way in the answer's last ``http.response.body``
message, under :data:`BODY_BYTES`.
"""

BODY_BYTES = "inference_club.body_bytes"
"""Key of the last body message: how many bytes of the body went out through :data:`BODY`."""

DELIVERY = "inference_club.websocket.delivery"
"""The scope extension :class:`WebSocketProtocol` offers:
``{"deliver_to": callable, "send_bytes": coroutine function}``.

``deliver_to(receiver)`` hands every binary message from then on to ``receiver`` in the
callback that read it: no ASGI message, queue, task switch or pause of the socket per
message. Text messages and the end of the connection still come through ``receive``.

``await send_bytes(data)``, once the connection is accepted, sends one binary message
as an ASGI ``websocket.send`` would (waiting while the socket's buffer is full; raising
``ClientDisconnected`` once the connection is gone or closing), without the ASGI
message and the layers it passes.
"""

_STATUS_LINE = b"HTTP/1.1 "
MAX_HELD = 64 * 1024
"""Bytes a held head gathers at most: more go out at once."""


class _HeadHoldingTransport:
    """A transport that keeps a response head for the write that follows it.

    Only ``write`` and the ways a connection ends are its own; everything else is the
    socket transport's. Holding any write would be correct (order is kept, and the held
    bytes leave at the loop's next turn at the latest): the test for a head only decides
    which writes wait.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif isinstance(data, bytes) and data.startswith(_STATUS_LINE) and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def write_part(self, data: bytes) -> None:
        """A part of a streamed body: it joins a head still held (which leaves at the loop's
        next turn, or with the next plain write, as before), else it goes now.

        Whatever else the answer sends in the same step then leaves in the same write: a
        short stream (head, its only part, the end) is one write, not two.
        """
        held = self._held
        if held is None:
            self._transport.write(data)
        elif len(held) + len(data) > MAX_HELD:
            self._held = None
            self._transport.write(held + data)
        else:
            self._held = held + data

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def unwrap(self) -> asyncio.Transport:
        """The socket's transport, anything held sent: for a protocol that writes no HTTP heads."""
        self._flush()
        return self._transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` writing through a :class:`_HeadHoldingTransport`, and
    offering :data:`DISCONNECT` and :data:`BODY` to each request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._leaving: dict[RequestResponseCycle, Callable[[], None]] = {}
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a request to answer (not an upgrade)
            if self._leaving:  # callbacks of answers completed without taking theirs back
                self._leaving = {c: f for c, f in self._leaving.items() if not c.response_complete}
            # Weak references: the scope holds these, and the cycle and this protocol hold the
            # scope. Strong ones made every request a reference cycle, which took the
            # connection's objects with it (some 8 KB) until the next full collection.
            extensions = self.scope.setdefault("extensions", {})
            cycle_ref = ref(cycle)
            extensions[DISCONNECT] = {"on_disconnect": partial(_on_disconnect, ref(self), cycle_ref)}
            extensions[BODY] = {"send_body": partial(_send_body, cycle_ref)}

    def _on_disconnect(self, cycle: RequestResponseCycle, callback: Callable[[], None]) -> Callable[[], None]:
        if cycle.disconnected:
            callback()
        else:
            self._leaving[cycle] = callback

        def take_back() -> None:
            self._leaving.pop(cycle, None)

        return take_back

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        leaving, self._leaving = self._leaving, {}
        for cycle, callback in leaving.items():
            if cycle.disconnected:  # uvicorn's mark: the answer was not complete
                callback()


def _on_disconnect(
    protocol_ref: ref[HttpProtocol], cycle_ref: ref[RequestResponseCycle], callback: Callable[[], None]
) -> Callable[[], None]:
    """:data:`DISCONNECT`'s ``on_disconnect`` for the request of ``cycle_ref``."""
    protocol, cycle = protocol_ref(), cycle_ref()
    if protocol is None or cycle is None:  # the request ended and is gone: nothing left to watch
        return _nothing
    return protocol._on_disconnect(cycle, callback)


def _nothing() -> None:
    pass


async def _send_body(cycle_ref: ref[RequestResponseCycle], data: bytes) -> None:
    """:data:`BODY`'s ``send_body`` for the request of ``cycle_ref``."""
    cycle = cycle_ref()
    if cycle is None:  # the request ended and is gone: as for a client that left, nothing is sent
        return
    if (
        not cycle.response_started
        or cycle.response_complete
        or not cycle.chunked_encoding
        or cycle.scope["method"] == "HEAD"  # uvicorn sends no body for a HEAD
    ):
        await cycle.send({"type": "http.response.body", "body": data, "more_body": True})
        return
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if data and not cycle.disconnected:
        cast(_HeadHoldingTransport, cycle.transport).write_part(b"%x\r\n%b\r\n" % (len(data), data))


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, offering :data:`DELIVERY` to the route it runs.

    Over the tunnel every answer is a message or more; through ASGI each cost a dict, a
    queue, a task switch (the reader's) and a pause and resume of the socket's reading
    (two system calls). Delivered, a message goes from the parser to the tunnel's frames
    in one call. Backpressure stays with the tunnel: its streams take no more than their
    credit, and a peer that sends past it is cut off.
    """

    _deliver: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, _HeadHoldingTransport):  # handed over by the HTTP protocol
            transport = transport.unwrap()
        super().connection_made(transport)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # None when the handshake was refused
        if scope is not None:
            scope["extensions"][DELIVERY] = {"deliver_to": self.deliver_to, "send_bytes": self.send_bytes}

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        """Binary messages to ``receiver`` from now on, those already queued first."""
        queued = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        self._deliver = receiver
        for message in queued:
            data = message.get("bytes") if message["type"] == "websocket.receive" else None
            if data is not None:
                receiver(data)
            else:
                self.queue.put_nowait(message)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    async def send_bytes(self, data: bytes) -> None:
        """One binary message, as ``send({"type": "websocket.send", "bytes": data})``."""
        if not self.writable.is_set():  # the socket's buffer is full: wait, as uvicorn's send does
            await self.writable.wait()
        if not self.handshake_complete or self.initial_response is not None:
            raise RuntimeError("send_bytes before the WebSocket was accepted")
        if self.disconnected or self.close_sent:
            raise ClientDisconnected()
        try:
            self.conn.send_binary(data)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))

    def send_receive_event_to_app(self) -> None:
        deliver = self._deliver
        if deliver is None or self.curr_msg_data_type != "bytes":
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if not self.close_sent:  # past its close the app takes nothing more (as uvicorn does)
            deliver(data if type(data) is bytes else bytes(data))
