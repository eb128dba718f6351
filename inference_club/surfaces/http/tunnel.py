"""``/api/inference/agent/tunnel/``: the WebSocket an agent opens to carry the hub's requests.

Bearer key first (401 ``{"detail"}`` before the upgrade when it is wrong, logged as one
WARNING line), then the tunnel server runs the connection (see
``services/transports/tunnel_server.py`` and ``docs/agent-protocol.md``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse

from inference_club.errors import AuthError, HubError
from inference_club.http_server import DELIVERY
from inference_club.services.auth import Principal
from inference_club.services.container import Hub
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.tunnel.protocol import CloseCode, ProtocolError
from inference_club.tunnel.traffic import Traffic

router = APIRouter(tags=["agent"])
log = logging.getLogger("inference_club.tunnel")

_UVICORN_DENIAL_NOISE = "ASGI callable returned without completing handshake"
# Set in the connection's own context when this route answered with a denial response.
_denied: ContextVar[bool] = ContextVar("tunnel_denied", default=False)


class _DenialIsNotAnError(logging.Filter):
    """Drop uvicorn's ERROR after a denial response this route sent on purpose.

    uvicorn's websockets-sansio protocol sends the denial but never marks the handshake
    complete, so it logs "ASGI callable returned without completing handshake" for every
    refused key (uvicorn pull request 3138). The record is emitted in the connection's
    task right after the route returns, so the context variable tells ours from a real one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_denied.get() and record.getMessage().startswith(_UVICORN_DENIAL_NOISE))


def _quiet_uvicorn_denials() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialIsNotAnError) for f in server_log.filters):
        server_log.addFilter(_DenialIsNotAnError())


class WebSocketLink:
    """The tunnel's :class:`~inference_club.tunnel.mux.Link` over a Starlette WebSocket."""

    def __init__(
        self,
        websocket: WebSocket,
        traffic: Traffic | None = None,
        send_bytes: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self._ws = websocket
        self._send_bytes = send_bytes or websocket.send_bytes
        self._gone = False
        self.traffic = traffic if traffic is not None else Traffic()

    async def receive(self) -> bytes | None:
        if self._gone:
            return None
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self._gone = True
            return None
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("text message on the tunnel (frames are binary)")
        self.traffic.received += len(data)
        self.traffic.messages_received += 1
        return bytes(data)

    async def send(self, data: bytes) -> None:
        self.traffic.sent += len(data)
        self.traffic.messages_sent += 1
        await self._send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        if not self._gone:
            self._gone = True
            await self._ws.close(code, reason)


class DeliveringWebSocketLink(WebSocketLink):
    """A :class:`WebSocketLink` on the hub's own WebSocket protocol
    (``http_server.DELIVERY``): messages are delivered as they are read, and sent
    without an ASGI message each."""

    def __init__(
        self,
        websocket: WebSocket,
        deliver_to: Callable[[Callable[[bytes], None]], None],
        send_bytes: Callable[[bytes], Awaitable[None]],
        traffic: Traffic,
    ) -> None:
        super().__init__(websocket, traffic, send_bytes)
        self._deliver_to = deliver_to

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        self._deliver_to(self.traffic.counting(receiver))


def _link(websocket: WebSocket, traffic: Traffic) -> WebSocketLink:
    delivery = websocket.scope.get("extensions", {}).get(DELIVERY)
    if delivery is None:  # another server (the tunnel then reads and sends through ASGI)
        return WebSocketLink(websocket, traffic)
    return DeliveringWebSocketLink(websocket, delivery["deliver_to"], delivery["send_bytes"], traffic)


@router.websocket("/api/inference/agent/tunnel")
async def tunnel(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    authorization = websocket.headers.get("authorization")
    client = websocket.client
    peer = f"{client.host}:{client.port}" if client else "?"
    try:
        principal = await hub.auth.authenticate(authorization)
    except HubError as exc:  # a bad key (401), or the database is unavailable (503)
        log.warning("tunnel refused from %s: %s", peer, exc.message)
        await _deny(websocket, exc)
        return
    transport = hub.transports.by_name.get("tunnel")
    if not isinstance(transport, TunnelTransport):
        await websocket.close(CloseCode.GOING_AWAY, "this hub has no tunnel transport")
        return

    async def reauthenticate() -> Principal:
        return await hub.auth.authenticate(authorization)

    await websocket.accept()
    link = _link(websocket, websocket.app.state.metrics.tunnel_traffic)
    await transport.server.serve(principal, link, reauthenticate=reauthenticate, peer=peer)


async def _deny(websocket: WebSocket, exc: HubError) -> None:
    response = JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
    _quiet_uvicorn_denials()
    try:
        await websocket.send_denial_response(response)
        _denied.set(True)
    except RuntimeError:  # the server cannot answer HTTP here: close with the code instead
        code = CloseCode.UNAUTHORIZED if isinstance(exc, AuthError) else CloseCode.GOING_AWAY
        with contextlib.suppress(Exception):
            await websocket.close(code, exc.message)
