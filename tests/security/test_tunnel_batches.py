"""A hostile agent's batched tunnel messages cost it its tunnel, never the hub.

On a version-3 tunnel one WebSocket message may carry several frames, each with its own
length. A hostile agent can lie in them: cut a batch short, claim a length past the end
of the message, or send more than the hub's frame limit. Each is a protocol error: the
hub closes that tunnel with the protocol-error close code, forgets the provider, and
keeps serving everyone else.
"""

from __future__ import annotations

import struct

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from inference_club.agent.tunnel import tunnel_url
from inference_club.tunnel.protocol import (
    HEADER,
    MAX_FRAME_SIZE,
    CloseCode,
    Flag,
    Frame,
    FrameType,
    Hello,
    Welcome,
    decode_frame,
    decode_frames,
)
from tests.conftest import RunningHub

PING = Frame(FrameType.PING, 0, Flag.NONE, struct.pack("!Q", 7)).encode()


async def welcomed(ws: ClientConnection, name: str) -> Welcome:
    await ws.send(Hello(heartbeat={"name": name}, protocol=3).to_frame().encode())
    welcome = Welcome.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
    assert welcome.protocol == 3
    return welcome


async def pongs(ws: ClientConnection) -> int:
    """Read until the hub answers the pings just sent; how many pongs came back."""
    count = 0
    while count < 3:
        message = await ws.recv()
        assert isinstance(message, bytes)
        count += sum(
            f.type is FrameType.PONG and f.payload == PING[HEADER.size :] for f in decode_frames(message)
        )
    return count


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        (PING + PING[:7], "shorter than a header"),
        (PING + HEADER.pack(FrameType.PING, 0, 0, 0, 1 << 30) + b"12345678", "runs past the end"),
        (PING * (MAX_FRAME_SIZE // len(PING) + 1), "exceeds the limit"),
    ],
    ids=["truncated", "length-past-the-end", "oversized"],
)
async def test_a_hostile_batch_closes_only_that_tunnel(hub: RunningHub, hostile: bytes, reason: str) -> None:
    key = await hub.new_user("mallory")
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(tunnel_url(hub.base_url), additional_headers=headers, max_size=None) as ws:
        await welcomed(ws, "hostile-batcher")
        await ws.send(PING * 3)  # an honest batch first: three frames, three answers
        assert await pongs(ws) == 3
        await ws.send(hostile)
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    assert ws.close_code == CloseCode.PROTOCOL_ERROR
    assert ws.close_reason is not None and reason in ws.close_reason
    assert not any(p.name == "hostile-batcher" for p in hub.hub.registry.online())

    # The hub is unharmed: it answers HTTP and welcomes the next agent.
    async with httpx.AsyncClient(base_url=hub.base_url) as http:
        assert (await http.get("/v1/models", headers=headers)).status_code == 200
    async with connect(tunnel_url(hub.base_url), additional_headers=headers) as ws:
        await welcomed(ws, "honest-batcher")
        await ws.send(PING * 3)
        assert await pongs(ws) == 3
