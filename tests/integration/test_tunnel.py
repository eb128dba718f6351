"""The tunnel on loopback: many streams, a stalled reader, several tunnels, drops, cancels, refusals.

The hub runs on a real socket, agents in process (``transport="tunnel"``), the fake
engine in process too. The whole /v1 surface over the tunnel is covered by
``test_inference.py`` (its ``stack`` fixture runs on both transports).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from inference_club import __version__
from inference_club.agent.runner import AgentRunner
from inference_club.agent.tunnel import TunnelClient, tunnel_url
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.testing.fake_engine import FakeEngineState, Fault
from inference_club.tunnel.protocol import (
    CloseCode,
    Frame,
    FrameType,
    GoAway,
    Hello,
    Welcome,
    decode_frame,
)
from tests.conftest import RunningHub
from tests.integration.conftest import engine_server, run_agent, services_for
from tests.polling import eventually

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello over the tunnel"}]


def tunnels_of(hub: RunningHub) -> TunnelServer:
    transport = hub.hub.transports.by_name["tunnel"]
    assert isinstance(transport, TunnelTransport)
    return transport.server


def client_of(agent: AgentRunner) -> TunnelClient:
    assert isinstance(agent.transport, TunnelClient)
    return agent.transport


def http(hub: RunningHub, key: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs
    )


def online(hub: RunningHub, name: str) -> bool:
    return any(p.name == name for p in hub.hub.registry.online())


async def sse_text(response: httpx.Response) -> tuple[str, list[str]]:
    """The streamed content and any ``event: error`` data lines."""
    text, errors, event = "", [], ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            if event == "error":
                errors.append(line[6:])
            elif line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
            event = ""
    return text, errors


@asynccontextmanager
async def tunnel_stack(
    hub: RunningHub,
    *names: str,
    max_concurrency: int = 8,
    types: list[str] | None = None,
    state: FakeEngineState | None = None,
) -> AsyncIterator[tuple[str, FakeEngineState, list[AgentRunner]]]:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        engine, url = await exits.enter_async_context(engine_server(state))
        services = services_for(url, max_concurrency=max_concurrency, types=types or ["llm"])
        agents = [
            await exits.enter_async_context(run_agent(hub.base_url, key, name, services, transport="tunnel"))
            for name in names or ("rig",)
        ]
        yield key, engine, agents


# --------------------------------------------------------------------------- load


async def test_200_concurrent_streams_over_one_tunnel(hub: RunningHub) -> None:
    async with tunnel_stack(hub, max_concurrency=256) as (key, _, (agent,)):
        tunnels = tunnels_of(hub)
        assert tunnels.stats().tunnels == 1
        async with http(hub, key, limits=httpx.Limits(max_connections=250)) as client:

            async def one(i: int) -> str:
                body = {
                    "model": "fake-chat",
                    "stream": True,
                    "fake_chunk_delay": 0.01,
                    "messages": [{"role": "user", "content": f"stream {i} of many, all at once"}],
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    text, errors = await sse_text(response)
                assert not errors
                return text

            texts = await asyncio.gather(*(one(i) for i in range(200)))
        assert texts == [f"stream {i} of many, all at once" for i in range(200)]
        mux = client_of(agent).mux
        assert mux is not None and mux.streams_opened == 200
        assert tunnels.stats().streams == 0


async def _stalled_request(
    hub: RunningHub, key: str, size: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A video request from a client that reads nothing (tiny receive buffer)."""
    host, port = hub.base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    body = orjson.dumps({"model": "fake-video", "prompt": "a long film", "fake_size_bytes": size})
    writer.write(
        f"POST /v1/videos/generations HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


async def test_a_stalled_reader_does_not_delay_other_streams_and_stays_bounded(hub: RunningHub) -> None:
    size = 48_000_000
    async with tunnel_stack(hub, max_concurrency=64, types=["llm", "video"]) as (key, engine, _):
        tunnels = tunnels_of(hub)
        reader, writer = await _stalled_request(hub, key, size)
        # The answer backs up through the client socket, the hub, the tunnel stream.
        await eventually(lambda: tunnels.stats().buffered_bytes >= tunnels.window // 2, timeout=10)
        async with http(hub, key) as client:

            async def chat(i: int) -> None:
                body = {
                    "model": "fake-chat",
                    "stream": True,
                    "fake_chunks": 5,
                    "fake_chunk_delay": 0.05,
                    "messages": [{"role": "user", "content": f"meanwhile number {i}"}],
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    text, errors = await sse_text(response)
                assert (text, errors) == (f"meanwhile number {i}", [])

            # Fifty streams finish on the same tunnel while the stalled one stays open and
            # backed up: were it blocking the tunnel, none of them could.
            for rounds in range(5):
                await asyncio.gather(*(chat(rounds * 10 + i) for i in range(10)))
                stats = tunnels.stats()
                assert stats.streams >= 1  # the stalled stream is still open...
                assert stats.peak_stream_buffered <= stats.window  # ...and its buffer is capped

        # Now the client reads: the whole answer arrives intact.
        received = 0
        head = b""
        while chunk := await reader.read(1 << 20):
            if not head:
                head = chunk[: chunk.index(b"\r\n\r\n")]
            received += len(chunk)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert received > size
        file_id = next(
            line.split(b": ")[1].decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-file-id")
        )
        async with http(hub, key) as client:
            meta = (await client.get(f"/v1/files/{file_id}")).json()
        assert meta["bytes"] == size
        assert engine.stats.aborted == 0
        assert tunnels.stats().peak_stream_buffered <= tunnels.window


async def test_large_upload_crosses_under_credits(hub: RunningHub) -> None:
    audio = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    async with tunnel_stack(hub, types=["stt"]) as (key, _, _), http(hub, key) as client:
        response = await client.post(
            "/v1/audio/transcriptions",
            data={"model": "fake-whisper"},
            files={"file": ("big.wav", audio, "audio/wav")},
        )
        assert response.status_code == 200, response.text
        assert hashlib.sha256(audio).hexdigest()[:12] in response.text
        assert str(len(audio)) in response.text


# --------------------------------------------------------------------------- several tunnels


async def test_several_tunnels_of_one_provider_share_the_load(hub: RunningHub) -> None:
    async with tunnel_stack(hub, "rig", "rig") as (key, _, agents):
        tunnels = tunnels_of(hub)
        (provider,) = hub.hub.registry.all()
        assert len(tunnels.tunnels(provider.id)) == 2 and provider.tunnels == 2
        async with http(hub, key) as client:

            async def chat(i: int) -> None:
                body = {"model": "fake-chat", "messages": CHAT, "fake_chunk_delay": 0.05, "stream": True}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert (await sse_text(response))[0] == CHAT[0]["content"]

            await asyncio.gather(*(chat(i) for i in range(8)))
            opened = [client_of(a).mux.streams_opened for a in agents]  # type: ignore[union-attr]
            assert sum(opened) == 8 and min(opened) >= 3, opened

            # One agent leaves: the provider stays online on the other tunnel.
            await agents[0].stop()
            assert online(hub, "rig") and provider.tunnels == 1
            answer = await client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert answer.status_code == 200


# --------------------------------------------------------------------------- failures


async def test_a_dropped_tunnel_is_unroutable_at_once_and_its_streams_fail_fast(hub: RunningHub) -> None:
    async with tunnel_stack(hub) as (key, engine, (agent,)), http(hub, key) as client:
        tunnel = client_of(agent)
        tunnel.base_backoff_s = 2.0  # no reconnect during the checks below (>= 1 s)
        body = {
            "model": "fake-chat",
            "messages": CHAT,
            "stream": True,
            "fake_chunks": 100,
            "fake_chunk_delay": 0.1,
        }
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            assert tunnel.link is not None
            tunnel.link.abort()
            dropped = time.monotonic()
            rest = [line async for line in lines]
            assert time.monotonic() - dropped < 2.0
        assert any(line == "event: error" for line in rest), rest
        assert "data: [DONE]" not in rest
        await eventually(lambda: not online(hub, "rig"), timeout=0.5)
        answer = await client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "no_provider"
        # The agent comes back by itself.
        tunnel.base_backoff_s = 0.1
        await eventually(lambda: online(hub, "rig"), timeout=8)
        answer = await client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert answer.status_code == 200
        await eventually(lambda: engine.stats.aborted >= 1)  # the orphaned engine request was dropped


async def test_a_request_waiting_on_a_dropped_tunnel_fails_over(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        hanging = FakeEngineState(faults=[Fault(hang=True)])
        _, hang_url = await exits.enter_async_context(engine_server(hanging))
        _, good_url = await exits.enter_async_context(engine_server())
        a = await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig-a", services_for(hang_url, types=["llm"]), transport="tunnel")
        )
        await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig-b", services_for(good_url, types=["llm"]), transport="direct")
        )
        user_id = (await hub.hub.auth.authenticate(f"Bearer {key}")).user_id
        b = hub.hub.registry.find(user_id, "rig-b")
        assert b is not None
        for _ in range(hub.settings.breaker_failures):  # rank rig-b second
            hub.hub.breaker.failure(b.id)
        client_of(a).base_backoff_s = 5.0
        async with http(hub, key) as client:
            request = asyncio.create_task(
                client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            )
            await eventually(lambda: hanging.stats.in_flight == 1)
            link = client_of(a).link
            assert link is not None
            link.abort()
            dropped = time.monotonic()
            answer = await request
        assert time.monotonic() - dropped < 2.0
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ic-provider"] == "rig-b"


async def test_client_disconnect_aborts_the_engine_request(hub: RunningHub) -> None:
    async with tunnel_stack(hub) as (key, engine, _), http(hub, key) as client:
        # Mid-stream, while the engine is silent...
        body = {"model": "fake-chat", "messages": CHAT, "stream": True, "fake_fault": "stall=2"}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert (await anext(response.aiter_lines())).startswith("data: ")
        left = time.monotonic()
        await eventually(lambda: engine.stats.aborted == 1, timeout=2)
        # ...and before the first byte.
        body = {"model": "fake-chat", "messages": CHAT, "fake_fault": "hang"}
        request = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await eventually(lambda: engine.stats.in_flight == 1)
        request.cancel()
        await eventually(lambda: engine.stats.aborted == 2, timeout=2)
        assert time.monotonic() - left < 4
        assert tunnels_of(hub).stats().streams == 0


async def test_an_engine_failure_mid_stream_ends_the_clients_stream_with_an_error(hub: RunningHub) -> None:
    async with tunnel_stack(hub) as (key, _, _), http(hub, key) as client:
        body = {"model": "fake-chat", "messages": CHAT, "stream": True, "fake_fault": "break=2"}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            _, errors = await sse_text(response)
        assert errors and "upstream_error" in errors[0]
        assert online(hub, "rig")  # the tunnel itself is fine
        answer = await client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert answer.status_code == 200


async def test_agent_shutdown_drains(hub: RunningHub) -> None:
    async with tunnel_stack(hub) as (key, engine, (agent,)), http(hub, key) as client:
        body = {
            "model": "fake-chat",
            "messages": CHAT,
            "stream": True,
            "fake_chunks": 10,
            "fake_chunk_delay": 0.1,
        }
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            first = await anext(lines)
            stopping = asyncio.create_task(agent.stop())
            await eventually(lambda: not online(hub, "rig"), timeout=1)  # no new streams at once
            answer = await client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert answer.status_code == 404
            rest = [line async for line in lines]  # the running stream finishes normally
        await stopping
        assert first.startswith("data: ") and "data: [DONE]" in rest
        assert "event: error" not in rest
        assert engine.stats.aborted == 0


# --------------------------------------------------------------------------- handshake and liveness


async def test_a_wrong_key_is_refused_before_the_upgrade(hub: RunningHub) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(tunnel_url(hub.base_url), additional_headers={"Authorization": "Bearer nope"}):
            pass
    assert info.value.response.status_code == 401
    assert b"detail" in info.value.response.body


async def test_an_unsupported_protocol_version_is_refused_clearly(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with connect(tunnel_url(hub.base_url), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        hello = {"protocol": 99, "heartbeat": {"name": "future-rig"}}
        await ws.send(Frame(FrameType.HELLO, payload=orjson.dumps(hello)).encode())
        refusal = GoAway.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert refusal.code == "unsupported_version" and refusal.supported == (1, 2, 3)
    assert "protocol 99 is not supported" in refusal.message
    assert ws.close_code == CloseCode.UNSUPPORTED_VERSION
    assert hub.hub.registry.all() == []


async def test_a_bad_hello_is_refused(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with connect(tunnel_url(hub.base_url), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send(Hello(heartbeat={"name": "bad name with spaces"}).to_frame().encode())
        refusal = GoAway.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
    assert refusal.code == "bad_hello" and "name" in refusal.message


async def test_the_hub_notices_a_silent_agent(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    tunnels = tunnels_of(hub)
    tunnels.ping_interval_s, tunnels.dead_after_s = 0.2, 1.0
    async with connect(
        tunnel_url(hub.base_url), additional_headers={"Authorization": f"Bearer {key}"}, ping_interval=None
    ) as ws:
        await ws.send(Hello(heartbeat={"name": "mute"}).to_frame().encode())
        welcome = Welcome.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        assert welcome.dead_after_s == 1.0
        assert online(hub, "mute")
        silent_since = time.monotonic()  # from now on nothing is sent, pings go unanswered
        await eventually(lambda: not online(hub, "mute"), timeout=3)
        assert time.monotonic() - silent_since < 1.0 + 0.5
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    assert ws.close_code == CloseCode.PEER_SILENT


async def test_the_agent_notices_a_silent_hub_and_reconnects() -> None:
    connections: list[ServerConnection] = []
    finished = asyncio.Event()

    async def silent_hub(ws: ServerConnection) -> None:
        connections.append(ws)
        Hello.from_frame(decode_frame(await ws.recv()))  # type: ignore[arg-type]
        await ws.send(
            Welcome(
                provider_id="prov_x",
                tunnel_id=f"tun_{len(connections)}",
                ping_interval_s=0.1,
                dead_after_s=0.5,
            )
            .to_frame()
            .encode()
        )
        await finished.wait()  # never a frame again

    async with serve(silent_hub, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        from inference_club.agent.config import build_config

        config = build_config(
            {
                "hub": f"http://127.0.0.1:{port}",
                "key": "k",
                "name": "rig",
                "services": [{"type": "llm", "url": "http://127.0.0.1:9/v1", "discover": False}],
            }
        )
        runner = AgentRunner(config, report_gpus=False)
        client_of(runner).base_backoff_s = 0.05
        await runner.start()
        try:
            async with asyncio.timeout(3):
                await runner.registered.wait()
            started = time.monotonic()
            await eventually(lambda: len(connections) >= 2, timeout=3)
            assert time.monotonic() - started < 0.5 + 1.0
        finally:
            finished.set()
            await runner.stop()


async def test_heartbeats_travel_over_the_tunnel(hub: RunningHub) -> None:
    async with tunnel_stack(hub) as (_, _, (agent,)):
        (provider,) = hub.hub.registry.all()
        before = provider.last_seen
        assert provider.transport == "tunnel" and provider.version == __version__
        await asyncio.sleep(0.01)
        agent.heartbeat.poke()  # not the HTTP loop: it does not run with the tunnel
        client_of(agent).poke()
        await eventually(lambda: hub.hub.registry.all()[0].last_seen > before)
        refreshed = hub.hub.registry.all()[0]
        assert refreshed.tunnels == 1 and online(hub, "rig")
