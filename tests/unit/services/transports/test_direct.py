"""The direct transport against a real agent: the answer as relayed, the agent secret, and
every way a provider can be unreachable before a byte arrives (each safe to fail over)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from inference_club.domain.callback_url import parse_callback_url
from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.http_headers import ANSWER_HEADERS_NOT_RELAYED
from inference_club.http1 import Http1Transport
from inference_club.netpool import PooledClient
from inference_club.services.callback_policy import CallbackPolicy
from inference_club.services.transports import direct as direct_module
from inference_club.services.transports.base import TransportUnavailable, UpstreamRequest
from inference_club.services.transports.direct import DirectTransport
from tests.unit.domain.test_providers import state as provider_state
from tests.unit.services.hub_rig import Rig, hub_rig

EMBEDDINGS = BY_NAME["embeddings"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with hub_rig(tmp_path) as rig:
        yield rig


def direct(rig: Rig) -> DirectTransport:
    transport = rig.hub.hub.transports.by_name["direct"]
    assert isinstance(transport, DirectTransport)
    return transport


async def test_the_agents_answer_arrives_without_connection_headers(rig: Rig) -> None:
    await rig.agent("rig", types=["embedding"])
    provider = rig.hub.hub.registry.get(rig.provider_id("rig"))
    assert provider is not None
    response = await direct(rig).send(provider, rig.request(EMBEDDINGS, "fake-embed"))
    try:
        assert response.status == 200 and not response.agent_error
        names = {name for name, _ in response.headers}
        assert "content-type" in names and not names & ANSWER_HEADERS_NOT_RELAYED
        answer = orjson.loads(b"".join([chunk async for chunk in response.aiter_bytes()]))
        assert answer["data"][0]["embedding"]
    finally:
        await response.aclose()


async def test_a_body_in_hand_goes_with_its_length_not_chunked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.agent("rig", types=["embedding"])
    provider = rig.hub.hub.registry.get(rig.provider_id("rig"))
    assert provider is not None
    transport = direct(rig)
    sent: list[tuple[list[tuple[bytes, bytes]], object]] = []
    pool = transport._client._transport
    assert isinstance(pool, Http1Transport)
    real_round_trip = pool._round_trip

    async def recording_round_trip(url: httpx.URL, method: str, fields: Any, body: Any, timeouts: Any) -> Any:
        sent.append((list(fields), body))
        return await real_round_trip(url, method, fields, body, timeouts)

    monkeypatch.setattr(pool, "_round_trip", recording_round_trip)
    request = rig.request(EMBEDDINGS, "fake-embed")
    assert request.payload is not None
    response = await transport.send(provider, request)
    try:
        assert response.status == 200
        assert b"".join([chunk async for chunk in response.aiter_bytes()])
    finally:
        await response.aclose()
    [(fields, body)] = sent
    assert body == request.payload
    names = [name.lower() for name, _ in fields]
    assert dict(fields)[b"Content-Length"] == str(len(request.payload)).encode()
    assert b"transfer-encoding" not in names and names.count(b"content-length") == 1


async def test_an_https_agent_is_called_at_its_checked_address_under_its_own_name() -> None:
    sent: list[httpx.Request] = []

    def agent(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True})

    async def resolver(host: str, _port: int) -> list[str]:
        return ["127.0.0.1"]

    provider = provider_state(callback_url="https://agent.example:8443/base", agent_secret="s3cret")
    request = UpstreamRequest(
        service_type="llm",
        model="m",
        method="POST",
        path="/v1/chat/completions",
        headers={"content-type": "application/json"},
        body=_no_body,
        request_id="req_1",
        payload=b"{}",
    )
    async with PooledClient(transport=httpx.MockTransport(agent)) as client:
        transport = DirectTransport(client, CallbackPolicy(resolver=resolver))
        response = await transport.send(provider, request)
        await response.aclose()
    [call] = sent
    assert str(call.url) == "https://127.0.0.1:8443/base/relay/llm/v1/chat/completions"
    assert call.extensions["sni_hostname"] == "agent.example"  # the certificate is checked for it
    assert call.headers["host"] == "agent.example:8443" and call.headers["x-ic-agent-secret"] == "s3cret"
    assert call.content == b"{}" and response.status == 200


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""


async def test_a_wrong_agent_secret_is_the_agents_own_refusal(rig: Rig) -> None:
    await rig.agent("rig", types=["embedding"])
    provider = rig.hub.hub.registry.get(rig.provider_id("rig"))
    assert provider is not None
    forged = dataclasses.replace(provider, agent_secret="not-the-secret")
    response = await direct(rig).send(forged, rig.request(EMBEDDINGS, "fake-embed"))
    try:
        assert response.status == 401
        assert "detail" in orjson.loads(b"".join([chunk async for chunk in response.aiter_bytes()]))
    finally:
        await response.aclose()


async def test_unreachable_providers_fail_before_any_byte(rig: Rig) -> None:
    runner, _engine = await rig.agent("rig", types=["embedding"])
    provider = rig.hub.hub.registry.get(rig.provider_id("rig"))
    assert provider is not None
    request = rig.request(EMBEDDINGS, "fake-embed")
    await runner.stop()
    with pytest.raises(TransportUnavailable, match="refused the connection"):
        await direct(rig).send(provider, request)
    with pytest.raises(TransportUnavailable, match="no callback_url"):
        await direct(rig).send(dataclasses.replace(provider, callback_url=None), request)
    metadata = dataclasses.replace(provider, callback_url="http://169.254.169.254/agent")
    with pytest.raises(TransportUnavailable, match="callback refused"):
        await direct(rig).send(metadata, request)


async def test_agent_urls_are_built_once_and_their_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(direct_module, "_CACHED_URLS", 3)
    async with PooledClient() as client:
        transport = DirectTransport(client, CallbackPolicy())
        target = parse_callback_url("http://agent.example:8123/base")
        address = ipaddress.ip_address("10.0.0.7")
        url = transport._url(target, address, target.relay_path("llm", "/v1/audio/voices"), "model=é")
        assert str(url) == "http://10.0.0.7:8123/base/relay/llm/v1/audio/voices?model=?"
        assert transport._url(target, address, target.relay_path("llm", "/v1/audio/voices"), "model=é") is url
        other = transport._url(target, ipaddress.ip_address("10.0.0.8"), "/base/relay/llm/v1/models", "")
        assert str(other) == "http://10.0.0.8:8123/base/relay/llm/v1/models"  # another address: its own URL
        for n in range(10):
            transport._url(target, address, "/base/relay/llm/v1/models", f"n={n}")
        assert len(transport._urls) <= 3
