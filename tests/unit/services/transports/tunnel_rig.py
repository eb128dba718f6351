"""An agent's end of a tunnel, in process: it says HELLO over an in-memory WebSocket link
(the multiplexer tests' ``link_pair``), reads the hub's WELCOME, then runs a real
:class:`Mux` that answers each request stream with ``handler``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from inference_club.services.auth import Principal
from inference_club.services.transports.tunnel_server import Reauthenticate, TunnelServer
from inference_club.tunnel.mux import Mux, Stream, StreamReset
from inference_club.tunnel.protocol import (
    DEFAULT_WINDOW,
    PROTOCOL_VERSION,
    Frame,
    GoAway,
    Hello,
    RequestHead,
    ResponseHead,
    Welcome,
    decode_frame,
)
from tests.polling import eventually
from tests.unit.tunnel.test_mux import MemoryLink, link_pair

__all__ = ["FakeAgent", "Request", "echo", "eventually", "heartbeat_body", "read_body"]


@dataclass
class Request:
    """One request as the agent received it."""

    stream: Stream
    head: RequestHead
    body: bytes = b""


Handler = Callable[[Request], Coroutine[Any, Any, None]]


async def read_body(stream: Stream) -> bytes:
    out = bytearray()
    while (chunk := await stream.read()) is not None:
        out += chunk
    return bytes(out)


async def echo(request: Request) -> None:
    """Answer 200 with the request body, in two chunks, with a hop-by-hop header to drop."""
    stream = request.stream
    request.body = await read_body(stream)
    headers = [("content-type", "application/json"), ("connection", "keep-alive"), ("x-engine", "fake")]
    stream.send_head(ResponseHead(200, headers).to_frame(stream.id))
    half = len(request.body) // 2
    await stream.write(request.body[:half])
    await stream.write(request.body[half:])
    stream.end()


def heartbeat_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "services": [{"type": "embedding", "models": [{"id": "emb"}]}], **extra}


@dataclass
class FakeAgent:
    server: TunnelServer
    principal: Principal
    name: str = "tun"
    handler: Handler = echo
    max_streams: int = 64
    protocol: int = PROTOCOL_VERSION
    """The tunnel protocol version offered in the hello."""
    reauthenticate: Reauthenticate | None = None
    link: MemoryLink = field(init=False)
    hub_link: MemoryLink = field(init=False)
    welcome: Welcome | None = None
    mux: Mux | None = None
    requests: list[Request] = field(default_factory=list)
    resets: list[Stream] = field(default_factory=list)
    controls: list[Frame] = field(default_factory=list)
    serving: asyncio.Task[None] | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hub_link, self.link = link_pair()

    def start_serving(self) -> None:
        self.serving = asyncio.create_task(
            self.server.serve(self.principal, self.hub_link, reauthenticate=self.reauthenticate, peer="test")
        )

    async def say(self, raw: bytes) -> None:
        """Send the first message (normally a HELLO) and let the hub serve the link."""
        await self.link.send(raw)
        self.start_serving()

    async def connect(self, **heartbeat: Any) -> Welcome:
        hello = Hello(
            heartbeat=heartbeat_body(self.name, **heartbeat),
            agent_version="9.9",
            max_streams=self.max_streams,
            protocol=self.protocol,
        )
        await self.say(hello.to_frame().encode())
        async with asyncio.timeout(5):
            raw = await self.link.receive()
        assert raw is not None, "the hub closed the tunnel instead of welcoming the agent"
        self.welcome = Welcome.from_frame(decode_frame(raw))
        self.mux = Mux(
            self.link,
            opener=False,
            protocol=self.welcome.protocol,
            recv_window=DEFAULT_WINDOW,
            send_window=self.welcome.window,
            max_streams=self.max_streams,
            on_open=self._on_open,
            on_reset=self.resets.append,
            on_control=self.controls.append,
            label="agent",
        )
        self._tasks.append(asyncio.create_task(self.mux.run()))
        return self.welcome

    def _on_open(self, stream: Stream, frame: Frame) -> None:
        request = Request(stream, RequestHead.from_payload(frame))
        self.requests.append(request)
        self._tasks.append(asyncio.create_task(self._handle(request)))

    async def _handle(self, request: Request) -> None:
        with contextlib.suppress(StreamReset):  # the hub gave up on the request: nothing to answer
            await self.handler(request)

    def goaways(self) -> list[str]:
        return [GoAway.from_frame(f).code for f in self.controls if f.type.name == "GOAWAY"]

    async def refusal(self) -> tuple[str, tuple[int, str] | None]:
        """What a refused hello got back: the GOAWAY code and the close code and reason."""
        async with asyncio.timeout(5):
            raw = await self.link.receive()
        assert raw is not None
        code = GoAway.from_frame(decode_frame(raw)).code
        assert self.serving is not None
        async with asyncio.timeout(5):
            await self.serving
        return code, self.hub_link.closed_with

    async def close(self) -> None:
        if self.mux is not None:
            self.mux.close()
            if self._tasks:  # the first task runs the multiplexer: let it close the link
                with contextlib.suppress(Exception):
                    await asyncio.wait(self._tasks[:1], timeout=3)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait([t for t in self._tasks], timeout=3)
        if self.serving is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.serving
