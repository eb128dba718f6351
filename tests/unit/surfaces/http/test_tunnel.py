"""The agent tunnel's WebSocket route: the key before the upgrade, and the link it hands the tunnel server.

Driven at the ASGI level (httpx speaks no WebSocket): the test plays the server's side.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import orjson
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from inference_club.surfaces.http import tunnel as tunnel_route
from inference_club.surfaces.http.tunnel import WebSocketLink
from inference_club.tunnel.protocol import CloseCode, ProtocolError
from inference_club.tunnel.traffic import Traffic
from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub

pytestmark = MODULE_LOOP

PATH = "/api/inference/agent/tunnel"


class Peer:
    """The server's side of one WebSocket connection: what the app receives and what it sent."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(dict(message))

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def ws_scope(authorization: str | None, *, denial: bool = True, path: str = PATH) -> dict[str, Any]:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "server": ("hub.test", 80),
        "client": ("127.0.0.1", 5555),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }


async def run(api: InProcessHub, scope: dict[str, Any], peer: Peer) -> None:
    async with asyncio.timeout(10):
        await api.app(scope, peer.receive, peer.send)


@pytest.mark.parametrize("authorization", [None, "Bearer ic_wrong"], ids=["missing", "wrong"])
async def test_a_bad_key_gets_a_401_denial_before_the_upgrade_and_one_warning(
    api: InProcessHub, authorization: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inference_club.tunnel")
    peer = Peer({"type": "websocket.connect"})
    await run(api, ws_scope(authorization), peer)
    assert peer.types()[0] == "websocket.http.response.start" and "websocket.accept" not in peer.types()
    assert peer.sent[0]["status"] == 401
    body = b"".join(m.get("body", b"") for m in peer.sent if m["type"] == "websocket.http.response.body")
    assert orjson.loads(body)["error"]["type"] == "invalid_api_key"
    [warning] = [r for r in caplog.records if r.name == "inference_club.tunnel"]
    assert "127.0.0.1:5555" in warning.getMessage()
    if authorization:
        assert "ic_wrong" not in warning.getMessage()


async def test_without_the_denial_extension_a_bad_key_closes_with_unauthorized(api: InProcessHub) -> None:
    peer = Peer({"type": "websocket.connect"})
    await run(api, ws_scope("Bearer ic_wrong", denial=False), peer)
    assert peer.types() == ["websocket.close"]
    assert peer.sent[0]["code"] == CloseCode.UNAUTHORIZED


async def test_a_good_key_is_accepted_and_a_peer_leaving_before_hello_ends_the_route(
    api: InProcessHub,
) -> None:
    key = await api.new_key()
    peer = Peer({"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000})
    await run(api, ws_scope(f"Bearer {key}", path=PATH + "/"), peer)  # the trailing slash is fine too
    assert peer.types()[0] == "websocket.accept"
    user_id = await api.user_id(key)
    assert [p for p in api.hub.registry.all() if p.user_id == user_id] == []  # no hello, no provider


async def connected_link(*incoming: dict[str, Any]) -> tuple[WebSocketLink, Peer, Traffic]:
    peer = Peer({"type": "websocket.connect"}, *incoming)
    websocket = WebSocket(ws_scope(None), peer.receive, peer.send)
    await websocket.accept()
    traffic = Traffic()
    return WebSocketLink(websocket, traffic), peer, traffic


async def test_the_link_passes_binary_frames_both_ways_and_counts_them() -> None:
    link, peer, traffic = await connected_link({"type": "websocket.receive", "bytes": b"\x01\x02\x03"})
    assert await link.receive() == b"\x01\x02\x03"
    await link.send(b"abcd")
    assert {"type": "websocket.send", "bytes": b"abcd"} in peer.sent
    assert (traffic.received, traffic.sent) == (3, 4)


async def test_a_text_message_on_the_tunnel_is_a_protocol_error() -> None:
    link, _peer, _traffic = await connected_link({"type": "websocket.receive", "text": "hello"})
    with pytest.raises(ProtocolError):
        await link.receive()


async def test_after_a_disconnect_the_link_reads_none_and_closes_nothing() -> None:
    link, peer, _traffic = await connected_link({"type": "websocket.disconnect", "code": 1001})
    assert await link.receive() is None
    assert await link.receive() is None  # no second read of a gone socket
    await link.close(CloseCode.NORMAL, "bye")
    assert "websocket.close" not in peer.types()


async def test_close_sends_its_code_and_reason_once() -> None:
    link, peer, _traffic = await connected_link()
    await link.close(CloseCode.PROTOCOL_ERROR, "bad frame")
    await link.close(CloseCode.NORMAL, "again")
    closes = [m for m in peer.sent if m["type"] == "websocket.close"]
    assert closes == [{"type": "websocket.close", "code": CloseCode.PROTOCOL_ERROR, "reason": "bad frame"}]


async def test_uvicorns_noise_after_our_denial_is_dropped_and_nothing_else() -> None:
    noise = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "ASGI callable returned without completing handshake.",
        None,
        None,
    )
    other = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, None
    )
    keep = tunnel_route._DenialIsNotAnError()

    def after_denial() -> tuple[bool, bool]:
        tunnel_route._denied.set(True)
        return keep.filter(noise), keep.filter(other)

    assert contextvars.copy_context().run(after_denial) == (False, True)
    assert keep.filter(noise) is True  # another connection's handshake failure is still logged
