"""Cross-replica tunnels: a request on replica B reaches an agent tunnelled to replica A.

Two hubs in process on real sockets share one PostgreSQL database and one Redis (a DB
number of its own); a real agent dials replica A through a TCP forwarder that plays the
load balancer; the fake engine answers. Replica B learns of the provider the way the
shared provider presence will tell it (:func:`know_remote_provider`), and finds the
tunnel's replica through the tunnel directory in Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis.asyncio as aioredis
from openai.types.chat import ChatCompletionMessageParam

from inference_club.agent.runner import AgentRunner
from inference_club.agent.tunnel import TunnelClient
from inference_club.cluster.relay import (
    HEAD_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    ClusterSigner,
    RelayClient,
    encode_head,
)
from inference_club.cluster.tunnel_directory import TunnelDirectory, tunnels_key
from inference_club.domain.providers import ProviderState
from inference_club.services.transports.base import TransportUnavailable, UpstreamRequest
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.surfaces.app import create_app
from inference_club.testing.fake_engine import FakeEngineState
from inference_club.testing.servers import free_port, serve_app
from inference_club.testing.tcp_proxy import TcpProxy
from tests.conftest import RunningHub, _truncate_all, make_settings, skip_or_fail
from tests.integration.conftest import engine_server, run_agent, services_for
from tests.polling import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REDIS_URL = os.environ.get("IC_TEST_REDIS_RELAY_URL", "redis://127.0.0.1:6379/13")
CLUSTER_SECRET = "relay-test-cluster-secret-" + "c" * 16
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from the other replica"}]
# What legitimately differs between two answers of the fake engine: its ids and clock.
_VARYING = re.compile(rb'"id": "[a-z]+-[0-9a-f]{24}"|"created": \d+')


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        skip_or_fail(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def shared_database(postgres_database: str) -> str:
    await _truncate_all(postgres_database)
    return postgres_database


@asynccontextmanager
async def replica(
    tmp_path: Path, name: str, database_url: str, redis_url: str, **overrides: Any
) -> AsyncIterator[RunningHub]:
    """One hub replica on its own port, advertising that port as its internal URL."""
    port = free_port()
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "cluster_secret": CLUSTER_SECRET,
        "internal_url": f"http://127.0.0.1:{port}",
        "secret_key": "relay-test-secret-key-" + "s" * 16,
    }
    values.update(overrides)
    settings = make_settings(tmp_path / name, database_url, **values)
    app = create_app(settings)
    async with serve_app(app, port=port) as base_url:
        yield RunningHub(base_url=base_url, hub=app.state.hub, settings=settings)


def tunnels_of(hub: RunningHub) -> TunnelServer:
    transport = hub.hub.transports.by_name["tunnel"]
    assert isinstance(transport, TunnelTransport)
    return transport.server


def directory_of(hub: RunningHub) -> TunnelDirectory:
    assert hub.hub.tunnel_directory is not None
    return hub.hub.tunnel_directory


async def know_remote_provider(hub: RunningHub, provider_id: str) -> ProviderState:
    """Make ``hub`` see a provider tunnelled to another replica as online.

    Stands in for the shared provider presence: the provider's row is read from the
    shared database and marked as having a tunnel (somewhere in the cluster).
    """
    await hub.hub.registry.load()
    state = hub.hub.registry.get(provider_id)
    assert state is not None and state.transport == "tunnel"
    state.tunnels = 1
    return state


@dataclass
class Cluster:
    a: RunningHub
    b: RunningHub
    key: str
    engine: FakeEngineState
    engine_url: str
    agent: AgentRunner
    balancer: TcpProxy
    provider_id: str
    stop_a: Callable[[], Any]
    """Stops replica A alone (its server, then its hub)."""

    def http(self, hub: RunningHub, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=hub.base_url, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"}
        )

    def openai(self, hub: RunningHub) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=self.key, max_retries=0)


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    *,
    types: list[str] | None = None,
    b_redis_url: str | None = None,
) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as exits:
        a_lifetime = AsyncExitStack()
        a = await a_lifetime.enter_async_context(replica(tmp_path, "a", database_url, redis_url))
        exits.push_async_callback(a_lifetime.aclose)
        b = await exits.enter_async_context(replica(tmp_path, "b", database_url, b_redis_url or redis_url))
        key = await a.new_user("alice")
        engine, engine_url = await exits.enter_async_context(engine_server())
        host, port = a.base_url.removeprefix("http://").split(":")
        balancer = await exits.enter_async_context(TcpProxy(host, int(port)))
        agent = await exits.enter_async_context(
            run_agent(
                f"http://{balancer.address}",
                key,
                "rig",
                services_for(engine_url, types=types or ["llm"]),
                transport="tunnel",
            )
        )
        (provider_id,) = [p.id for p in a.hub.registry.all()]
        await know_remote_provider(b, provider_id)
        await eventually(lambda: directory_of(b).holders(provider_id))
        yield Cluster(a, b, key, engine, engine_url, agent, balancer, provider_id, a_lifetime.aclose)


def normalized(body: bytes) -> bytes:
    return _VARYING.sub(b"<varies>", body)


# --------------------------------------------------------------------------- answers through B


async def test_chat_through_the_other_replica_is_the_same_as_through_the_holder(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with cluster(tmp_path, shared_database, redis_url) as c, c.http(c.a) as via_a, c.http(c.b) as via_b:
        assert tunnels_of(c.a).tunnels(c.provider_id) and not tunnels_of(c.b).tunnels(c.provider_id)
        body = {"model": "fake-chat", "messages": CHAT}
        answers = [await client.post("/v1/chat/completions", json=body) for client in (via_a, via_b)]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-ic-provider"] == "rig"
            assert answer.headers["content-type"] == "application/json"
        assert normalized(answers[0].content) == normalized(answers[1].content)
        assert answers[1].json()["choices"][0]["message"]["content"] == CHAT[0]["content"]

        # Streamed: the same events, chunk for chunk, through either replica.
        stream = {**body, "stream": True, "fake_chunks": 12, "fake_chunk_delay": 0.01}
        raw: list[bytes] = []
        for client in (via_a, via_b):
            async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                raw.append(b"".join([chunk async for chunk in response.aiter_raw()]))
        assert normalized(raw[0]) == normalized(raw[1])
        assert raw[1].endswith(b"data: [DONE]\n\n") and raw[1].count(b"data: ") == 12 + 3

        # The engine's own error answer: the same status and body through either replica.
        refused = [
            await client.post("/v1/chat/completions", json={**body, "fake_fault": "status=429"})
            for client in (via_a, via_b)
        ]
        assert [r.status_code for r in refused] == [429, 429]
        assert refused[0].content == refused[1].content

        # The official SDK, streaming through B.
        text = ""
        async for event in await c.openai(c.b).chat.completions.create(
            model="fake-chat", messages=CHAT, stream=True
        ):
            text += event.choices[0].delta.content or "" if event.choices else ""
        assert text == CHAT[0]["content"]
        relay = tunnels_transport(c.b).relay
        assert isinstance(relay, RelayClient) and relay.relayed == 4


def tunnels_transport(hub: RunningHub) -> TunnelTransport:
    transport = hub.hub.transports.by_name["tunnel"]
    assert isinstance(transport, TunnelTransport)
    return transport


async def test_uploads_and_binary_answers_cross_replicas_intact(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with (
        cluster(tmp_path, shared_database, redis_url, types=["stt", "tts", "video"]) as c,
        c.http(c.a) as via_a,
        c.http(c.b) as via_b,
    ):
        audio = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # several tunnel windows
        answer = await via_b.post(
            "/v1/audio/transcriptions",
            data={"model": "fake-whisper"},
            files={"file": ("big.wav", audio, "audio/wav")},
        )
        assert answer.status_code == 200, answer.text
        assert hashlib.sha256(audio).hexdigest()[:12] in answer.text and str(len(audio)) in answer.text

        speech = {
            "model": "fake-tts",
            "input": "the same words on both replicas",
            "voice": "alloy",
            "response_format": "wav",
        }
        spoken = [await client.post("/v1/audio/speech", json=speech) for client in (via_a, via_b)]
        assert [s.status_code for s in spoken] == [200, 200]
        assert spoken[1].headers["content-type"] == spoken[0].headers["content-type"] == "audio/wav"
        assert spoken[1].content == spoken[0].content and spoken[1].content.startswith(b"RIFF")

        size = 5_000_000
        video = {"model": "fake-video", "prompt": "a film in one piece", "fake_size_bytes": size, "seed": 7}
        films = []
        for client in (via_a, via_b):
            async with client.stream("POST", "/v1/videos/generations", json=video) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "video/mp4"
                films.append(hashlib.sha256(b"".join([c async for c in response.aiter_raw()])).hexdigest())
        assert films[0] == films[1]


async def test_back_pressure_reaches_the_holders_tunnel(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    """A client on B that reads nothing stalls the engine's answer; no replica buffers it all."""
    size = 32_000_000
    async with cluster(tmp_path, shared_database, redis_url, types=["video"]) as c:
        holder = tunnels_of(c.a)
        reader, writer = await _stalled_request(c.b, c.key, size)
        await eventually(lambda: holder.stats().buffered_bytes >= holder.window // 2, timeout=30)
        # Had B (or A's relay route) read on regardless, the answer would never back up into
        # A's tunnel; there it stays capped by the tunnel's window.
        stats = holder.stats()
        assert stats.streams == 1 and stats.peak_stream_buffered <= stats.window
        received, head = 0, b""
        while chunk := await reader.read(1 << 20):
            if not head:
                head = chunk[: chunk.index(b"\r\n\r\n")]
            received += len(chunk)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200") and received > size
        assert holder.stats().peak_stream_buffered <= holder.window
        assert c.engine.stats.aborted == 0


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


# --------------------------------------------------------------------------- cancel and failures


async def test_a_client_leaving_replica_b_cancels_the_engine_request(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with cluster(tmp_path, shared_database, redis_url) as c, c.http(c.b) as via_b:
        # Mid-stream, while the engine is silent...
        body = {"model": "fake-chat", "messages": CHAT, "stream": True, "fake_fault": "stall=5"}
        async with via_b.stream("POST", "/v1/chat/completions", json=body) as response:
            assert (await anext(response.aiter_lines())).startswith("data: ")
        await eventually(lambda: c.engine.stats.aborted == 1)
        # ...and before the first byte.
        body = {"model": "fake-chat", "messages": CHAT, "fake_fault": "hang"}
        request = asyncio.create_task(via_b.post("/v1/chat/completions", json=body))
        await eventually(lambda: c.engine.stats.in_flight == 1)
        request.cancel()
        await eventually(lambda: c.engine.stats.aborted == 2)
        await eventually(lambda: tunnels_of(c.a).stats().streams == 0)


async def test_an_answer_breaking_off_on_the_holder_ends_the_stream_on_b_with_an_error(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with cluster(tmp_path, shared_database, redis_url) as c, c.http(c.b) as via_b:
        body = {"model": "fake-chat", "messages": CHAT, "stream": True, "fake_fault": "break=2"}
        async with via_b.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines()]
        assert "event: error" in lines and "data: [DONE]" not in lines
        answer = await via_b.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert answer.status_code == 200  # the relay and the tunnel are fine


async def test_relay_calls_need_the_cluster_secret(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with (
        cluster(tmp_path, shared_database, redis_url) as c,
        httpx.AsyncClient(base_url=c.a.base_url, timeout=10) as raw,
    ):
        request = UpstreamRequest(
            service_type="llm",
            model="fake-chat",
            method="POST",
            path="/v1/chat/completions",
            headers={"content-type": "application/json"},
            body=_no_body,
            request_id="req_relay_test",
        )
        head = encode_head(request)
        body = orjson.dumps({"model": "fake-chat", "messages": CHAT})
        url = f"/internal/relay/{c.provider_id}"

        def signed(signer: ClusterSigner, at: int) -> dict[str, str]:
            return {
                HEAD_HEADER: head,
                TIME_HEADER: str(at),
                SIGNATURE_HEADER: signer.sign(c.provider_id, head, at),
            }

        now = int(time.time())
        refused = [
            await raw.post(url, content=body),
            await raw.post(url, content=body, headers=signed(ClusterSigner("not-the-cluster-secret"), now)),
            await raw.post(url, content=body, headers=signed(ClusterSigner(CLUSTER_SECRET), now - 3600)),
            await raw.post(
                url,
                content=body,
                headers={
                    **signed(ClusterSigner(CLUSTER_SECRET), now),
                    HEAD_HEADER: encode_head(_other_path(request)),
                },
            ),
        ]
        assert [r.status_code for r in refused] == [401] * 4
        assert all("cluster signature" in r.json()["error"]["message"] for r in refused)
        assert c.engine.stats.requests["/v1/chat/completions"] == 0
        accepted = await raw.post(url, content=body, headers=signed(ClusterSigner(CLUSTER_SECRET), now))
        assert accepted.status_code == 200
        assert orjson.loads(accepted.content)["choices"][0]["message"]["content"] == CHAT[0]["content"]
        paths = (await raw.get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/internal")]


def _other_path(request: UpstreamRequest) -> UpstreamRequest:
    return UpstreamRequest(
        request.service_type,
        request.model,
        "POST",
        "/v1/embeddings",
        request.headers,
        request.body,
        request.request_id,
    )


async def _no_body() -> AsyncIterator[bytes]:
    yield b""


async def test_a_replica_with_another_secret_cannot_relay(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with (
        cluster(tmp_path, shared_database, redis_url) as c,
        replica(tmp_path, "c", shared_database, redis_url, cluster_secret="x" * 40) as stranger,
    ):
        await know_remote_provider(stranger, c.provider_id)
        async with c.http(stranger) as via_stranger:
            answer = await via_stranger.post(
                "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT}
            )
        assert answer.status_code == 502 and answer.json()["error"]["type"] == "upstream_error"
        assert c.engine.stats.requests["/v1/chat/completions"] == 0


async def test_the_relay_route_does_not_exist_on_a_single_hub(hub: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url) as raw:
        answer = await raw.post("/internal/relay/prov_x", content=b"{}")
    assert answer.status_code == 404


async def test_a_dead_holder_fails_over_like_an_unavailable_provider(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with cluster(tmp_path, shared_database, redis_url) as c:
        # Replica A dies without a word: its directory entries stay until they expire, and
        # its internal address refuses connections (a "ghost" replica here).
        await directory_of(c.a).stop()
        assert c.b.hub.redis is not None
        ghost = TunnelDirectory(
            c.b.hub.redis, replica_id="ghost", internal_url=f"http://127.0.0.1:{free_port()}"
        )
        await ghost.advertise()
        await ghost.claim([c.provider_id])
        relay = tunnels_transport(c.b).relay
        assert isinstance(relay, RelayClient)
        # Presence on B still shows the tunnel on A, so B waits for another holder first; briefly here.
        relay.holder_wait_s = 0.5
        state = c.b.hub.registry.get(c.provider_id)
        assert state is not None
        with pytest.raises(TransportUnavailable, match="no replica holding its tunnel answered"):
            await relay.send(
                state, UpstreamRequest("llm", "fake-chat", "GET", "/v1/models", {}, _no_body, "r1")
            )

        # Through the router: the next provider serves the request.
        async with (
            engine_server() as (_, url2),
            run_agent(c.b.base_url, c.key, "rig-2", services_for(url2, types=["llm"]), transport="direct"),
        ):
            rig2 = next(p for p in c.b.hub.registry.all() if p.name == "rig-2")
            for _ in range(c.b.settings.breaker_failures):  # rank rig-2 second
                c.b.hub.breaker.failure(rig2.id)
            async with c.http(c.b) as via_b:
                answer = await via_b.post(
                    "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT}
                )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-ic-provider"] == "rig-2"
        assert c.engine.stats.requests["/v1/chat/completions"] == 0


async def test_a_request_meeting_only_a_dead_holder_waits_for_the_new_one(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with cluster(tmp_path, shared_database, redis_url) as c, c.http(c.b) as via_b:
        # B waits for a holder only while presence shows the tunnel elsewhere: let it arrive first.
        await eventually(
            lambda: (state := c.b.hub.registry.get(c.provider_id)) is not None and state.remote_tunnels,
            what="B's presence showing the tunnel on A",
        )
        # The directory names only a replica that died; the agent's tunnel is claimed nowhere yet.
        holder = directory_of(c.a)
        await holder.stop()
        assert c.b.hub.redis is not None
        ghost = TunnelDirectory(
            c.b.hub.redis, replica_id="ghost", internal_url=f"http://127.0.0.1:{free_port()}"
        )
        await ghost.claim([c.provider_id], advertise=True)
        relay = tunnels_transport(c.b).relay
        assert isinstance(relay, RelayClient)
        answer = asyncio.create_task(
            via_b.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        )
        await eventually(lambda: relay.waited == 1)  # the ghost refused; presence still shows the tunnel
        assert not answer.done()
        # The replica now holding the tunnel claims it (as after the agent's reconnect).
        assert c.a.hub.redis is not None
        moved = TunnelDirectory(c.a.hub.redis, replica_id=holder.replica_id, internal_url=holder.internal_url)
        await moved.claim([c.provider_id], advertise=True)
        served = await answer
        assert served.status_code == 200, served.text
        assert served.headers["x-ic-provider"] == "rig"


async def test_when_the_holder_stops_the_agent_moves_and_requests_on_b_work_again(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with AsyncExitStack() as exits:
        c = await exits.enter_async_context(cluster(tmp_path, shared_database, redis_url))
        via_b = await exits.enter_async_context(c.http(c.b))
        body = {"model": "fake-chat", "messages": CHAT}
        assert (await via_b.post("/v1/chat/completions", json=body)).status_code == 200
        tunnel = c.agent.transport
        assert isinstance(tunnel, TunnelClient)
        sessions = tunnel.sessions

        # The load balancer now sends new connections to B; A shuts down (GOAWAY to the agent).
        host, port = c.b.base_url.removeprefix("http://").split(":")
        c.balancer.target = (host, int(port))
        redis = aioredis.Redis.from_url(redis_url)
        exits.push_async_callback(redis.aclose)
        a_replica = directory_of(c.a).replica_id
        await c.stop_a()
        assert a_replica.encode() not in await redis.zrange(tunnels_key(c.provider_id), 0, -1)

        # The agent reconnects (its backoff: 0.5 to 1 s after the first loss) and lands on B.
        await eventually(lambda: tunnel.sessions > sessions and tunnels_of(c.b).tunnels(c.provider_id))
        answer = await via_b.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ic-provider"] == "rig"
        relay = tunnels_transport(c.b).relay
        assert isinstance(relay, RelayClient) and relay.relayed == 1  # the second went down B's own tunnel
        assert directory_of(c.b).replica_id.encode() in await redis.zrange(tunnels_key(c.provider_id), 0, -1)


async def test_redis_down_answers_busy_on_b_and_relaying_resumes_by_itself(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    host_port, _, db = redis_url.removeprefix("redis://").partition("/")
    host, port = host_port.split(":")
    async with (
        TcpProxy(host, int(port)) as redis_link,
        cluster(tmp_path, shared_database, redis_url, b_redis_url=f"redis://{redis_link.address}/{db}") as c,
        c.http(c.b) as via_b,
        c.http(c.a) as via_a,
    ):
        body = {"model": "fake-chat", "messages": CHAT}
        assert (await via_b.post("/v1/chat/completions", json=body)).status_code == 200
        await redis_link.set_mode("refuse")
        answer = await via_b.post("/v1/chat/completions", json=body)
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "busy"
        assert int(answer.headers["retry-after"]) >= 1
        assert (await via_a.post("/v1/chat/completions", json=body)).status_code == 200  # A's own tunnel
        await redis_link.set_mode("pass")

        async def relayed() -> bool:
            return (await via_b.post("/v1/chat/completions", json=body)).status_code == 200

        await eventually(relayed)


async def test_right_after_redis_comes_back_empty_requests_on_b_wait_for_the_holder_instead_of_502(
    tmp_path: Path, shared_database: str, redis_url: str
) -> None:
    async with AsyncExitStack() as exits:
        a = await exits.enter_async_context(replica(tmp_path, "a", shared_database, redis_url))
        b = await exits.enter_async_context(replica(tmp_path, "b", shared_database, redis_url))
        key = await a.new_user("alice")
        _engine, engine_url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(
                a.base_url,
                key,
                "rig",
                services_for(engine_url, max_concurrency=16, types=["llm"]),
                transport="tunnel",
            )
        )
        (provider_id,) = [p.id for p in a.hub.registry.all()]

        def b_sees_the_tunnel_on_a() -> bool:
            state = b.hub.registry.get(provider_id)
            return state is not None and bool(state.remote_tunnels)

        # B learns of the tunnel through presence (no stand-in here) and of its holder through the directory.
        await eventually(b_sees_the_tunnel_on_a)
        await eventually(lambda: directory_of(b).holders(provider_id))
        redis = aioredis.Redis.from_url(redis_url)
        exits.push_async_callback(redis.aclose)
        via_b = await exits.enter_async_context(
            httpx.AsyncClient(base_url=b.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"})
        )

        await redis.flushdb()  # Redis restarted without its data
        # The two views disagree now: presence on B still shows the tunnel, the directory has no holder.
        assert b_sees_the_tunnel_on_a() and await directory_of(b).holders(provider_id) == []
        body = {"model": "fake-chat", "messages": CHAT}
        answers = await asyncio.gather(*[via_b.post("/v1/chat/completions", json=body) for _ in range(10)])
        assert [a.status_code for a in answers] == [200] * 10, [
            a.text for a in answers if a.status_code != 200
        ]
        assert all(a.headers["x-ic-provider"] == "rig" for a in answers)
        # A wrote its claim again (with its address) without waiting for its periodic refresh.
        assert [h.replica_id for h in await directory_of(b).holders(provider_id)] == [
            directory_of(a).replica_id
        ]
