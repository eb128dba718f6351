"""``/api/inference/agent/tunnel/``: the WebSocket an agent opens to carry the hub's requests.

Bearer key first (401 ``{"detail"}`` before the upgrade when it is wrong), then the
tunnel transport runs the connection (see ``services/transports/tunnel.py`` and
``docs/agent-protocol.md``).
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse

from inference_club.errors import AuthError
from inference_club.services.auth import Principal
from inference_club.services.container import Hub
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.tunnel.protocol import CloseCode, ProtocolError

router = APIRouter(tags=["agent"])


class WebSocketLink:
    """The tunnel's :class:`~inference_club.tunnel.mux.Link` over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._gone = False

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
        return bytes(data)

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        if not self._gone:
            self._gone = True
            await self._ws.close(code, reason)


@router.websocket("/api/inference/agent/tunnel")
async def tunnel(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    authorization = websocket.headers.get("authorization")
    try:
        principal = await hub.auth.authenticate(authorization)
    except AuthError as exc:
        await _deny(websocket, exc)
        return
    transport = hub.transports.by_name.get("tunnel")
    if not isinstance(transport, TunnelTransport):
        await websocket.close(CloseCode.GOING_AWAY, "this hub has no tunnel transport")
        return

    async def reauthenticate() -> Principal:
        return await hub.auth.authenticate(authorization)

    await websocket.accept()
    client = websocket.client
    peer = f"{client.host}:{client.port}" if client else ""
    await transport.serve(principal, WebSocketLink(websocket), reauthenticate=reauthenticate, peer=peer)


async def _deny(websocket: WebSocket, exc: AuthError) -> None:
    response = JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # the server cannot answer HTTP here: close with the code instead
        with contextlib.suppress(Exception):
            await websocket.close(CloseCode.UNAUTHORIZED, exc.message)
