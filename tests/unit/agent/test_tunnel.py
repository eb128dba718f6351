"""The agent's tunnel client against stub hubs: URL, refusals and backoff, version check, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from inference_club.agent.config import build_config
from inference_club.agent.discovery import Catalog
from inference_club.agent.relay import Relay
from inference_club.agent.tunnel import (
    PROTOCOL_VARIABLE,
    STREAMS_SPARE,
    ClientLink,
    DeliveringConnection,
    TunnelClient,
    offered_protocol,
    stream_limit,
    tunnel_url,
)
from inference_club.tunnel.mux import MAX_BATCH
from inference_club.tunnel.protocol import (
    DEFAULT_MAX_STREAMS,
    MAX_STREAMS,
    PROTOCOL_VERSION,
    GoAway,
    Hello,
    Welcome,
    decode_frame,
    decode_frames,
)
from tests.polling import eventually


@pytest.mark.parametrize(
    ("hub", "url"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/api/inference/agent/tunnel/"),
        ("https://hub.example.org/", "wss://hub.example.org/api/inference/agent/tunnel/"),
        ("https://example.org/club", "wss://example.org/club/api/inference/agent/tunnel/"),
    ],
)
def test_tunnel_url(hub: str, url: str) -> None:
    assert tunnel_url(hub) == url


def make_client(port: int, *, concurrency: tuple[int, ...] = (4,)) -> TunnelClient:
    config = build_config(
        {
            "hub": f"http://127.0.0.1:{port}",
            "key": "k",
            "name": "rig",
            "transport": "tunnel",
            "services": [
                {"type": "llm", "url": f"http://127.0.0.1:9/v{i}", "discover": False, "max_concurrency": n}
                for i, n in enumerate(concurrency, start=1)
            ],
        }
    )
    catalog = Catalog(config.services)
    client = TunnelClient(config, Relay(catalog), base_backoff_s=0.05, max_backoff_s=0.2)
    return client


def test_a_tunnel_takes_at_least_as_many_streams_as_its_services_take_calls() -> None:
    assert stream_limit([4, 8]) == DEFAULT_MAX_STREAMS
    assert stream_limit([1500, 600]) == 2100 + STREAMS_SPARE
    assert stream_limit([10**9]) == MAX_STREAMS  # what a hello may offer at most
    assert make_client(9).max_streams == DEFAULT_MAX_STREAMS


async def test_the_hello_offers_the_streams_the_services_take() -> None:
    hellos: list[Hello] = []

    async def hub(ws: ServerConnection) -> None:
        hellos.append(Hello.from_frame(decode_frame(await ws.recv())))  # type: ignore[arg-type]
        await ws.send(Welcome(provider_id="prov_1", tunnel_id="tun_1").to_frame().encode())
        await ws.wait_closed()

    async with serve(hub, "127.0.0.1", 0) as server:
        client = make_client(server.sockets[0].getsockname()[1], concurrency=(1500, 600))
        await client.start()
        try:
            await eventually(lambda: client.registered.is_set())
        finally:
            await client.stop()
    assert hellos[0].max_streams == 2100 + STREAMS_SPARE


async def run_against(
    handler: Callable[[ServerConnection], Awaitable[None]],
    check: Callable[[TunnelClient], bool],
    **server: object,
) -> TunnelClient:
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
        await ws.send(
            GoAway("unsupported_version", "tunnel protocol 1 is not supported", (0,)).to_frame().encode()
        )
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


@pytest.mark.parametrize("spoken", [1, 2, 3])
async def test_an_agent_speaks_the_hubs_version_with_progress_from_two_and_batches_from_three(
    spoken: int,
) -> None:
    hellos: list[Hello] = []
    messages: list[bytes] = []

    async def hub_of_version(ws: ServerConnection) -> None:
        hello = Hello.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        hellos.append(hello)
        if hello.protocol > spoken:
            refusal = GoAway("unsupported_version", "not spoken here", tuple(range(1, spoken + 1)))
            await ws.send(refusal.to_frame().encode())
            await ws.close(4001)
            return
        await ws.send(Welcome(provider_id="p", tunnel_id="t", protocol=spoken).to_frame().encode())
        async for message in ws:
            messages.append(message if isinstance(message, bytes) else message.encode())

    sent: list[bool] = []
    batch_sizes: list[int] = []

    def connected_and_reported(client: TunnelClient) -> bool:
        if client.connected.is_set() and not sent:
            assert client.mux is not None
            batch_sizes.append(client.mux.batch_size)
            sent.append(client.send_progress("job_1.1", 0.5, "half"))  # no PROGRESS before version 2
            sent.append(client.send_progress("job_1.1", 0.6, "more"))
        return bool(sent) and len(messages) >= 1 and progress_frames() >= (2 if spoken >= 2 else 0)

    def progress_frames() -> int:
        frames = [f for m in messages for f in (decode_frames(m) if spoken >= 3 else [decode_frame(m)])]
        return sum(f.type.name == "PROGRESS" for f in frames)

    client = await run_against(hub_of_version, connected_and_reported)
    assert [h.protocol for h in hellos][:2] == ([3, spoken] if spoken < 3 else [3])
    assert client.failures == 0  # stepping down to an older hub's version is not a failure
    assert client.protocol == spoken
    assert sent == [spoken >= 2] * 2 and batch_sizes == [MAX_BATCH if spoken >= 3 else 0]
    assert progress_frames() == (2 if spoken >= 2 else 0)


def test_the_offered_version_is_the_newest_unless_the_environment_caps_it() -> None:
    assert offered_protocol({}) == offered_protocol({PROTOCOL_VARIABLE: " "}) == PROTOCOL_VERSION
    assert offered_protocol({PROTOCOL_VARIABLE: "2"}) == 2
    for bad in ("0", "4", "two", "-1"):
        with pytest.raises(ValueError, match=PROTOCOL_VARIABLE):
            offered_protocol({PROTOCOL_VARIABLE: bad})


async def test_an_agent_told_to_offer_version_two_gets_an_unbatched_tunnel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROTOCOL_VARIABLE, "2")
    hellos: list[Hello] = []

    async def new_hub(ws: ServerConnection) -> None:
        hello = Hello.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        hellos.append(hello)
        await ws.send(
            Welcome(provider_id="p", tunnel_id="t", protocol=min(hello.protocol, 3)).to_frame().encode()
        )
        await ws.wait_closed()

    batch_sizes: list[int] = []

    def connected(client: TunnelClient) -> bool:
        if client.mux is not None:
            batch_sizes.append(client.mux.batch_size)
        return bool(batch_sizes)

    client = await run_against(new_hub, connected)
    assert [h.protocol for h in hellos] == [2] and client.protocol == 2 and batch_sizes == [0]


async def test_delivered_and_read_messages_keep_the_order_they_were_sent_in() -> None:
    """Messages that came before delivery began are read first, and so are those that
    came while any of them waited; delivery takes over once none waits, and what is not
    binary still comes through recv, in its place."""
    sent = [b"%d" % i * (1 + i % 7) for i in range(300)]

    async def hub(ws: ServerConnection) -> None:
        for message in sent[:5]:
            await ws.send(message)
        await ws.recv()  # "go": sent while the first five wait unread
        for message in sent[5:100]:
            await ws.send(message)
        await ws.recv()  # "more": sent once all of those were read
        for i, message in enumerate(sent[100:]):
            await ws.send(message)
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await ws.send("a text message")
        await ws.close()

    got: list[bytes | str] = []
    async with serve(hub, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", create_connection=DeliveringConnection) as ws:
            link = ClientLink(ws)
            await asyncio.sleep(0.2)
            link.deliver_to(got.append)
            await ws.send(b"go")
            await asyncio.sleep(0.2)  # the next 95 arrive behind the five: not delivered
            assert got == []
            while len(got) < 100:  # read until none waits: the rest of them then come by delivery
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):  # cancelling recv loses nothing
                        got.append(await ws.recv())
            await ws.send(b"more")
            while True:
                try:
                    got.append(await ws.recv())
                except ConnectionClosed:
                    break
    assert got == [*sent, "a text message"]
    assert link.traffic.messages_received >= 200  # the last 200 binary ones came by delivery
