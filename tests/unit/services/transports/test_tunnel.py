"""The tunnel transport sending requests to an in-process agent over a real multiplexer: the
request head and body as the agent gets them, the answer as relayed, every failure before
the head as TransportUnavailable (safe to fail over) or a timeout, failures after it from
the body, the least-loaded tunnel chosen, and the relay used only without a local tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest

from inference_club.cluster.relay import FAILURE_HEADER
from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.http_headers import ANSWER_HEADERS_NOT_RELAYED
from inference_club.domain.providers import ProviderState
from inference_club.errors import Busy
from inference_club.services.router import NoFreeSlot
from inference_club.services.transports.base import (
    BadResponseHead,
    BodyFactory,
    TransportBusy,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
    UpstreamResponse,
)
from inference_club.services.transports.tunnel import TunnelResponse, TunnelTransport
from inference_club.surfaces.http import internal_relay
from inference_club.tunnel.protocol import (
    DEFAULT_WINDOW,
    FrameType,
    ResetCode,
    ResponseHead,
    decode_frames,
)
from tests.polling import eventually
from tests.unit.services.built_hub import Built
from tests.unit.services.transports.tunnel_rig import FakeAgent, Request, read_body

EMBEDDINGS = BY_NAME["embeddings"]


async def connect(
    built: Built, agents: list[FakeAgent], **options: object
) -> tuple[FakeAgent, ProviderState]:
    agent = FakeAgent(built.hub.tunnels, built.principal, **options)  # type: ignore[arg-type]
    agents.append(agent)
    welcome = await agent.connect()
    provider = built.hub.registry.get(welcome.provider_id)
    assert provider is not None
    return agent, provider


def body_of(*chunks: bytes) -> BodyFactory:
    async def chunked() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return chunked


def request(*chunks: bytes, request_id: str = "req_1") -> UpstreamRequest:
    return UpstreamRequest(
        service_type="embedding",
        model="emb",
        method="POST",
        path="/v1/embeddings?x=1",
        headers={"content-type": "application/json"},
        body=body_of(*chunks),
        request_id=request_id,
    )


async def read_all(response: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in response.aiter_bytes()])


def transport(built: Built, *, upstream_timeout_s: float = 600.0) -> TunnelTransport:
    return TunnelTransport(built.hub.tunnels, upstream_timeout_s=upstream_timeout_s)


async def test_the_request_reaches_the_agent_and_its_answer_comes_back(
    built: Built, agents: list[FakeAgent]
) -> None:
    agent, provider = await connect(built, agents)
    payload = orjson.dumps({"model": "emb", "input": "hello"})
    response = await transport(built).send(provider, request(payload[:5], b"", payload[5:]))
    try:
        assert response.status == 200 and not response.agent_error
        names = {name for name, _ in response.headers}
        assert "x-engine" in names and not names & ANSWER_HEADERS_NOT_RELAYED
        assert await read_all(response) == payload
    finally:
        await response.aclose()
    [received] = agent.requests
    head = received.head
    assert (head.service_type, head.model, head.method, head.path) == (
        "embedding",
        "emb",
        "POST",
        "/v1/embeddings?x=1",
    )
    assert head.request_id == "req_1" and head.headers["x-request-id"] == "req_1"
    assert received.body == payload
    await eventually(lambda: built.hub.tunnels.stats().streams == 0)  # released when done


async def test_a_body_in_hand_leaves_in_the_message_of_its_open(
    built: Built, agents: list[FakeAgent]
) -> None:
    agent, provider = await connect(built, agents)
    payload = orjson.dumps({"model": "emb", "input": "hello"})
    await eventually(lambda: len(agent.hub_link.sent) >= 2)  # the WELCOME, then the first PING
    before = len(agent.hub_link.sent)
    whole = dataclasses.replace(request(b"never streamed"), payload=payload)
    response = await transport(built).send(provider, whole)
    try:
        assert await read_all(response) == payload
    finally:
        await response.aclose()
    [received] = agent.requests
    assert received.body == payload  # the payload, not the body factory
    opened, body = decode_frames(agent.hub_link.sent[before])
    assert (opened.type, body.type, body.end) == (FrameType.OPEN, FrameType.DATA, True)


async def test_a_body_beyond_the_credit_is_streamed_instead(built: Built, agents: list[FakeAgent]) -> None:
    agent, provider = await connect(built, agents)
    big = b"x" * (DEFAULT_WINDOW + 1)  # the agent's window is the hub's credit
    whole = dataclasses.replace(request(big[:10], big[10:]), payload=big)
    response = await transport(built).send(provider, whole)
    try:
        assert await read_all(response) == big
    finally:
        await response.aclose()
    assert agent.requests[0].body == big


async def test_an_agents_own_error_is_flagged(built: Built, agents: list[FakeAgent]) -> None:
    async def no_service(req: Request) -> None:
        await read_body(req.stream)
        req.stream.send_head(ResponseHead(502, [("x-ic-agent-error", "1")]).to_frame(req.stream.id))
        await req.stream.write(b'{"error": "no service"}')
        req.stream.end()

    _, provider = await connect(built, agents, handler=no_service)
    response = await transport(built).send(provider, request(b"{}"))
    try:
        assert response.status == 502 and response.agent_error
        assert await read_all(response) == b'{"error": "no service"}'
    finally:
        await response.aclose()


async def test_a_provider_without_a_tunnel_is_unavailable(built: Built) -> None:
    provider = built.hub.registry.find(built.principal.user_id, "rig")
    assert provider is not None
    with pytest.raises(TransportUnavailable, match="no open tunnel"):
        await transport(built).send(provider, request(b"{}"))


async def test_a_reset_before_the_head_is_unavailable_and_frees_the_stream(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def refuse(req: Request) -> None:
        req.stream.reset(ResetCode.INTERNAL, "engine unreachable")

    _, provider = await connect(built, agents, handler=refuse)
    with pytest.raises(TransportUnavailable, match="engine unreachable"):
        await transport(built).send(provider, request(b"{}"))
    assert built.hub.tunnels.stats().streams == 0


@pytest.mark.parametrize(
    "head",
    [
        ResponseHead(101, []),
        ResponseHead(200, [("x-bad", "a\r\nset-cookie: x=1")]),
        ResponseHead(200, [("bad name", "v")]),
    ],
)
async def test_a_head_that_cannot_be_relayed_is_refused(
    built: Built, agents: list[FakeAgent], head: ResponseHead
) -> None:
    async def answer(req: Request) -> None:
        req.stream.send_head(head.to_frame(req.stream.id))

    agent, provider = await connect(built, agents, handler=answer)
    with pytest.raises(BadResponseHead):
        await transport(built).send(provider, request())
    await eventually(lambda: len(agent.resets) == 1)  # the agent is told to stop


async def test_no_head_within_the_upstream_timeout_is_a_timeout(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def silent(req: Request) -> None:
        await read_body(req.stream)

    agent, provider = await connect(built, agents, handler=silent)
    with pytest.raises(TransportTimeout):
        await transport(built, upstream_timeout_s=0.2).send(provider, request(b"{}"))
    await eventually(lambda: len(agent.resets) == 1)


async def test_no_head_for_a_body_sent_with_its_open_is_a_timeout_too(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def silent(req: Request) -> None:
        await read_body(req.stream)

    agent, provider = await connect(built, agents, handler=silent)
    whole = dataclasses.replace(request(), payload=b'{"model":"emb"}')
    with pytest.raises(TransportTimeout, match=r"did not answer within 0\.2s"):
        await transport(built, upstream_timeout_s=0.2).send(provider, whole)
    await eventually(lambda: len(agent.resets) == 1)
    assert built.hub.tunnels.stats().streams == 0


async def test_a_close_cancelled_while_it_waits_has_already_freed_the_stream(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def answers_at_once(req: Request) -> None:
        req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))

    async def endless_upload() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.Event().wait()  # the rest never comes
        yield b""

    agent, provider = await connect(built, agents, handler=answers_at_once)
    upload = dataclasses.replace(request(), body=endless_upload)
    response = await transport(built).send(provider, upload)  # the body is still being sent
    closing = asyncio.ensure_future(response.aclose())
    await asyncio.sleep(0)  # in its wait for the body's task...
    closing.cancel()  # ...the caller is cancelled (its client left)
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    assert built.hub.tunnels.stats().streams == 0
    await eventually(lambda: len(agent.resets) == 1)  # the agent was told at once


async def test_silence_in_the_body_is_a_timeout_and_resets_the_stream(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def stalls(req: Request) -> None:
        await read_body(req.stream)
        req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))
        await req.stream.write(b"first")

    agent, provider = await connect(built, agents, handler=stalls)
    sender = transport(built, upstream_timeout_s=0.5)  # roomy enough for the head to come first
    response = await sender.send(provider, request(b"{}"))
    chunks = response.aiter_bytes()
    assert await anext(chunks) == b"first"
    with pytest.raises(TransportTimeout):
        await anext(chunks)
    await response.aclose()
    await eventually(lambda: len(agent.resets) == 1)


async def test_a_tunnel_lost_mid_answer_fails_the_body(built: Built, agents: list[FakeAgent]) -> None:
    async def dies(req: Request) -> None:
        await read_body(req.stream)
        req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))
        await req.stream.write(b"part")
        await asyncio.sleep(0)
        req.stream.reset(ResetCode.UPSTREAM_ERROR, "engine crashed", after_data=True)

    _, provider = await connect(built, agents, handler=dies)
    response = await transport(built).send(provider, request(b"{}"))
    try:
        with pytest.raises(TransportUnavailable, match="engine crashed"):
            await read_all(response)
    finally:
        await response.aclose()


async def test_closing_early_cancels_the_stream_at_the_agent(built: Built, agents: list[FakeAgent]) -> None:
    async def endless(req: Request) -> None:
        await read_body(req.stream)
        req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))
        await req.stream.write(b"tick")

    agent, provider = await connect(built, agents, handler=endless)
    response = await transport(built).send(provider, request(b"{}"))
    assert isinstance(response, TunnelResponse)
    await response.aclose()
    await response.aclose()  # twice is harmless
    await eventually(lambda: len(agent.resets) == 1)
    assert built.hub.tunnels.stats().streams == 0


async def test_a_body_that_fails_to_read_fails_the_send_and_resets(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"start"
        raise OSError("upload broke")

    agent, provider = await connect(built, agents)
    failing = UpstreamRequest("embedding", "emb", "POST", "/v1/embeddings", {}, broken, "req_2")
    with pytest.raises(TransportUnavailable, match="request body could not be read"):
        await transport(built).send(provider, failing)
    await eventually(lambda: len(agent.resets) == 1)


async def test_each_request_goes_to_the_least_loaded_tunnel(built: Built, agents: list[FakeAgent]) -> None:
    release = asyncio.Event()

    async def slow(req: Request) -> None:
        await read_body(req.stream)
        req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))
        await release.wait()
        req.stream.end()

    first, provider = await connect(built, agents, handler=slow)
    second, _ = await connect(built, agents, handler=slow)
    sender = transport(built)
    responses = [await sender.send(provider, request(b"{}")) for _ in range(4)]
    assert (len(first.requests), len(second.requests)) == (2, 2)
    release.set()
    for response in responses:
        assert await read_all(response) == b""
        await response.aclose()


async def hold(req: Request) -> None:
    """Answers with a head and keeps the stream open."""
    await read_body(req.stream)
    req.stream.send_head(ResponseHead(200, []).to_frame(req.stream.id))


async def test_a_full_tunnel_takes_no_more_streams(built: Built, agents: list[FakeAgent]) -> None:
    _, provider = await connect(built, agents, handler=hold, max_streams=1)
    sender = transport(built)
    held = await sender.send(provider, request(b"{}"))
    with pytest.raises(TransportBusy, match=r"all the streams its agent takes \(1\)"):
        await sender.send(provider, request(b"{}"))
    await held.aclose()
    again = await sender.send(provider, request(b"{}"))
    await again.aclose()


async def test_the_router_answers_busy_for_a_full_tunnel_and_leaves_its_breaker_alone(
    built: Built, agents: list[FakeAgent]
) -> None:
    """The agent takes more calls than its tunnel takes streams: the calls beyond are busy
    (503, try again), as for a provider at capacity, and do not count as failures."""
    _, provider = await connect(built, agents, handler=hold, max_streams=1)
    built.hub.transports.by_name["tunnel"] = transport(built)
    router = built.hub.router
    # The tunnel's provider alone (the built hub's direct provider has no transport here).
    found = [c for c in router.candidates(built.principal, EMBEDDINGS, "emb") if c.provider.id == provider.id]
    assert len(found) == 1
    held = await router.open(built.principal, EMBEDDINGS, request(b"{}"), found=found)
    try:
        for _ in range(built.hub.settings.breaker_failures + 1):
            with pytest.raises(Busy) as busy:
                await router.open(built.principal, EMBEDDINGS, request(b"{}"), found=found)
            assert busy.value.headers is not None and "Retry-After" in busy.value.headers
        with pytest.raises(NoFreeSlot):  # a job waits in its queue: this was no attempt
            await router.open(built.principal, EMBEDDINGS, request(b"{}"), background=True, found=found)
        assert not router.breaker.is_open(provider.id)
        assert router.capacity.load(held.slot) == 1  # only the held call's slot is taken
    finally:
        await held.close()
    again = await router.open(built.principal, EMBEDDINGS, request(b"{}"), found=found)
    assert again.provider.id == provider.id
    await again.close()


class RecordingRelay:
    """Stands for the replicas holding the tunnels this process does not."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> UpstreamResponse:
        self.sent.append(provider.id)
        raise TransportUnavailable("relayed")


async def test_the_relay_is_used_only_without_a_local_tunnel(built: Built, agents: list[FakeAgent]) -> None:
    relay = RecordingRelay()
    sender = TunnelTransport(built.hub.tunnels, relay=relay)
    _, provider = await connect(built, agents)
    response = await sender.send(provider, request(b"{}"))
    await response.aclose()
    assert relay.sent == []
    elsewhere = built.hub.registry.find(built.principal.user_id, "rig")
    assert elsewhere is not None
    with pytest.raises(TransportUnavailable, match="relayed"):
        await sender.send(elsewhere, request(b"{}"))
    assert relay.sent == [elsewhere.id]


async def test_a_full_tunnel_here_answers_a_relaying_replica_busy(
    built: Built, agents: list[FakeAgent]
) -> None:
    """What ``POST /internal/relay/...`` answers another replica when the tunnel here is
    full: busy, flagged so that replica's relay raises TransportBusy, and nothing sent."""
    _, provider = await connect(built, agents, handler=hold, max_streams=1)
    sender = transport(built)
    held = await sender.send(provider, request(b"{}"))
    sent: list[object] = []

    async def send(message: object) -> None:
        sent.append(message)

    try:
        with pytest.raises(Busy) as busy:
            await internal_relay._relay(sender, provider, request(b"{}"), send)
        assert busy.value.headers == {FAILURE_HEADER: "busy"} and sent == []
    finally:
        await held.aclose()


async def test_a_full_tunnel_here_tries_the_relay_then_is_busy(built: Built, agents: list[FakeAgent]) -> None:
    relay = RecordingRelay()
    sender = TunnelTransport(built.hub.tunnels, relay=relay)
    _, provider = await connect(built, agents, handler=hold, max_streams=1)
    held = await sender.send(provider, request(b"{}"))
    try:
        with pytest.raises(TransportBusy):  # not the relay's "relayed"
            await sender.send(provider, request(b"{}"))
        assert relay.sent == [provider.id]  # another replica may hold a tunnel with room
    finally:
        await held.aclose()
