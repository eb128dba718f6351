"""The agent's tunnel client against stub hubs: URL, refusals and backoff, version check, stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from inference_club.agent.config import build_config
from inference_club.agent.discovery import Catalog
from inference_club.agent.relay import Relay
from inference_club.agent.tunnel import TunnelClient, tunnel_url
from inference_club.tunnel.protocol import GoAway, Hello, Welcome, decode_frame


@pytest.mark.parametrize(("hub", "url"), [
    ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/api/inference/agent/tunnel/"),
    ("https://hub.example.org/", "wss://hub.example.org/api/inference/agent/tunnel/"),
    ("https://example.org/club", "wss://example.org/club/api/inference/agent/tunnel/"),
])
def test_tunnel_url(hub: str, url: str) -> None:
    assert tunnel_url(hub) == url


def make_client(port: int) -> TunnelClient:
    config = build_config({"hub": f"http://127.0.0.1:{port}", "key": "k", "name": "rig", "transport": "tunnel",
                           "services": [{"type": "llm", "url": "http://127.0.0.1:9/v1", "discover": False}]})
    catalog = Catalog(config.services)
    client = TunnelClient(config, Relay(catalog), base_backoff_s=0.05, max_backoff_s=0.2)
    return client


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.01)


async def run_against(handler: Callable[[ServerConnection], Awaitable[None]], check: Callable[[TunnelClient], bool],
                      **server: object) -> TunnelClient:
    async with serve(handler, "127.0.0.1", 0, **server) as hub:  # type: ignore[arg-type]
        client = make_client(hub.sockets[0].getsockname()[1])
        await client.start()
        try:
            await eventually(lambda: check(client))
        finally:
            started = time.monotonic()
            await client.stop()
            assert time.monotonic() - started < 2
    return client


async def test_a_refused_key_is_logged_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(401, '{"detail": "Invalid or missing API key."}')

    async def never(ws: ServerConnection) -> None:  # pragma: no cover - the handshake is refused
        return

    with caplog.at_level(logging.WARNING, logger="inference_club.agent.tunnel"):
        client = await run_against(never, lambda c: c.failures >= 4, process_request=refuse)
    assert not client.connected.is_set() and not client.registered.is_set()
    refused = [r for r in caplog.records if "refused the key" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR


async def test_a_hub_refusing_the_version_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    async def old_hub(ws: ServerConnection) -> None:
        Hello.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        await ws.send(GoAway("unsupported_version", "tunnel protocol 1 is not supported", (0,)).to_frame().encode())
        await ws.close(4001)

    with caplog.at_level(logging.WARNING, logger="inference_club.agent.tunnel"):
        await run_against(old_hub, lambda c: c.failures >= 2)
    assert any("unsupported_version" in r.getMessage() and "[0]" in r.getMessage() for r in caplog.records)


async def test_a_welcome_of_another_version_is_refused_by_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    async def future_hub(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(Welcome(provider_id="p", tunnel_id="t", protocol=7).to_frame().encode())
        await ws.wait_closed()

    with caplog.at_level(logging.WARNING, logger="inference_club.agent.tunnel"):
        client = await run_against(future_hub, lambda c: c.failures >= 2)
    assert client.sessions == 0
    assert any("protocol 7 is not supported" in r.getMessage() for r in caplog.records)


async def test_hello_carries_the_heartbeat_and_reconnects_follow_a_drop() -> None:
    hellos: list[Hello] = []

    async def flaky_hub(ws: ServerConnection) -> None:
        hellos.append(Hello.from_frame(decode_frame(await ws.recv())))  # type: ignore[arg-type]
        await ws.send(Welcome(provider_id="prov_1", tunnel_id=f"tun_{len(hellos)}").to_frame().encode())
        await ws.close()  # then drop it: the agent must come back

    client = await run_against(flaky_hub, lambda c: c.sessions >= 3)
    assert client.registered.is_set()
    body = hellos[0].heartbeat
    assert body["name"] == "rig" and body["transport"] == "tunnel" and "callback_url" not in body
    assert body["services"][0]["type"] == "llm"
