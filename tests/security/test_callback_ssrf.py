"""SSRF through the direct transport's callback URL.

A member's agent registers a callback URL and the hub makes requests to it. Before: the
hub appended ``/relay/...`` as text, so ``?`` or ``#`` aimed it at any path of any host
(another member's unauthenticated engine), and mapped IPv6 / ``0.0.0.0`` forms slipped
past the deny list. Now the URL is parsed, relay URLs are built from its parts, addresses
are judged by what they reach, and names are re-checked at connect time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inference_club.domain.callback_url import parse_callback_url
from inference_club.domain.providers import ProviderState
from inference_club.errors import InvalidRequest
from inference_club.netpool import pooled_client
from inference_club.services.callback_policy import CallbackBlocked, CallbackPolicy, reached_address
from inference_club.services.transports.base import TransportUnavailable, UpstreamRequest
from inference_club.services.transports.direct import DirectTransport
from inference_club.testing.servers import free_port, serve_app
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for

HEARTBEAT = "/api/inference/agent/heartbeat"


def _heartbeat(callback_url: str, name: str = "rig") -> dict[str, object]:
    return {
        "name": name,
        "transport": "direct",
        "callback_url": callback_url,
        "services": [{"type": "llm", "models": [{"id": "m"}]}],
    }


@dataclass
class Recorder:
    """A plain HTTP server standing for an unauthenticated engine (the victim) or an agent."""

    hits: list[tuple[str, str, str]] = field(default_factory=list)  # (path, query, host header)

    def app(self) -> Starlette:
        async def anything(request: Request) -> JSONResponse:
            self.hits.append((request.url.path, request.url.query, request.headers.get("host", "")))
            return JSONResponse({"object": "list", "data": [{"id": "victim-secret-model"}]})

        return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


@asynccontextmanager
async def recorder(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[tuple[Recorder, int]]:
    rec = Recorder()
    async with serve_app(rec.app(), host=host, port=port, shutdown_timeout_s=0.5) as url:
        yield rec, int(url.rsplit(":", 1)[1])


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("http://127.0.0.1:9/v1/models?", "query"),
        ("http://127.0.0.1:9/v1/models?x=1", "query"),
        ("http://127.0.0.1:9/v1/models#", "fragment"),
        ("http://user:pw@127.0.0.1:9/", "user name"),
        ("http://@127.0.0.1:9/", "user name"),
        ("http://127.0.0.1:9/a/../b", "segments"),
        ("http://127.0.0.1:9/a%2f..%2fb", "not allowed"),
        ("http://127.0.0.1:9/a;b", "not allowed"),
        ("http://127.0.0.1:99999/", "port"),
        ("http://127.0.0.1:0/", "port"),
        ("http://2130706433/", "numeric"),
        ("http://127.1/", "numeric"),
        ("http://0x7f.0.0.1/", "numeric"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://exa mple.org/", "spaces"),
        ("http://example.org\\@evil/", "backslash"),
        ("http://bücher.example/", "ASCII"),
        ("gopher://127.0.0.1:9/", "http"),
        ("//127.0.0.1:9/", "http"),
        ("http:///path", "host"),
    ],
)
def test_malformed_callback_urls_are_refused_naming_the_part(raw: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_callback_url(raw)
    assert caught.value.param == "callback_url"
    assert why in str(caught.value), str(caught.value)


def test_callback_urls_are_normalised() -> None:
    assert str(parse_callback_url("HTTP://Agent.Example:80/")) == "http://agent.example"
    assert (
        str(parse_callback_url("https://agent.example:443/base/path/")) == "https://agent.example/base/path"
    )
    assert str(parse_callback_url("http://[::FFFF:127.0.0.1]:8000")) == "http://[::ffff:7f00:1]:8000"
    target = parse_callback_url("http://10.0.0.5:9000/proxy")
    assert target.relay_path("llm", "/v1/chat/completions") == "/proxy/relay/llm/v1/chat/completions"


@pytest.mark.parametrize(
    ("address", "reaches"),
    [
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::169.254.169.254", "169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "::1"),
        ("::1", "::1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_addresses_are_judged_by_what_they_reach(address: str, reaches: str) -> None:
    assert reached_address(ipaddress.ip_address(address)) == ipaddress.ip_address(reaches)


# --------------------------------------------------------------------------- heartbeats


async def test_heartbeat_refuses_query_fragment_and_userinfo_and_stores_normal_form(hub: RunningHub) -> None:
    key = await hub.new_user("mallory")
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for raw in (
            "http://127.0.0.1:9/v1/models?",
            "http://127.0.0.1:9/v1/models#",
            "http://a:b@127.0.0.1:9/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::169.254.169.254]:80/",
        ):
            answer = await http.post(HEARTBEAT, json=_heartbeat(raw))
            assert answer.status_code == 400, (raw, answer.text)
            assert answer.json()["error"]["param"] == "callback_url"
            assert "callback_url" in answer.json()["error"]["message"]
        accepted = await http.post(HEARTBEAT, json=_heartbeat("HTTP://127.0.0.1:9/base/"))
        assert accepted.status_code == 200, accepted.text
    provider = hub.hub.registry.get(accepted.json()["provider_id"])
    assert provider is not None and provider.callback_url == "http://127.0.0.1:9/base"


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.1:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://0.0.0.0:9/",
        "http://[::]:9/",
        "http://[::1]:9/",
        "http://10.1.2.3:9/",
        "http://192.168.1.20:9/",
        "http://100.64.0.1:9/",
        "http://localhost:9/",
    ],
)
async def test_production_denies_loopback_and_private_callbacks(tmp_path: Path, raw: str) -> None:
    settings = make_settings(tmp_path / "data", environment="production", secret_key="s" * 40)
    async with running_hub(settings) as hub:
        key = await hub.new_user("mallory")
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            answer = await http.post(HEARTBEAT, json=_heartbeat(raw))
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "callback_url" and "IC_ALLOW_PRIVATE_CALLBACKS" in error["message"]


async def test_production_allows_private_callbacks_when_told(tmp_path: Path) -> None:
    explicit = make_settings(
        tmp_path / "a", environment="production", secret_key="s" * 40, allow_private_callbacks=True
    )
    listed = make_settings(
        tmp_path / "b", environment="production", secret_key="s" * 40, callback_allow_cidrs=["10.0.0.0/8"]
    )
    for settings, allowed, refused in (
        (explicit, "http://127.0.0.1:9/", "http://169.254.169.254/"),
        (listed, "http://10.0.0.5:9/", "http://192.168.1.1:9/"),
    ):
        async with running_hub(settings) as hub:
            key = await hub.new_user("alice")
            async with httpx.AsyncClient(
                base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
            ) as http:
                assert (await http.post(HEARTBEAT, json=_heartbeat(allowed))).status_code == 200
                assert (await http.post(HEARTBEAT, json=_heartbeat(refused))).status_code == 400


async def test_development_keeps_working_on_loopback(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as stack:
        _, url = await stack.enter_async_context(engine_server())
        await stack.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http:
            chat = await http.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.status_code == 200, chat.text


# --------------------------------------------------------------------------- the attack


async def test_a_member_cannot_aim_the_hub_at_another_path(hub: RunningHub) -> None:
    """The attack that worked: callback ``http://victim/v1/models?`` read the victim's engine.

    A provider row written before the fix (or any stored URL) is re-parsed at send time,
    so even a malicious stored value never reaches the victim.
    """
    key = await hub.new_user("mallory")
    async with recorder() as (victim, port):
        attack = f"http://127.0.0.1:{port}/v1/models?"
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http:
            refused = await http.post(HEARTBEAT, json=_heartbeat(attack, name="evil"))
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "callback_url"
            # Simulate a row stored before the fix: registered clean, then the URL swapped.
            registered = await http.post(HEARTBEAT, json=_heartbeat(f"http://127.0.0.1:{port}", name="evil"))
            assert registered.status_code == 200
            provider = hub.hub.registry.get(registered.json()["provider_id"])
            assert provider is not None
            provider.callback_url = attack
            answer = await http.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            )
        assert answer.status_code in (502, 503), answer.text
        assert "victim-secret-model" not in answer.text
        assert victim.hits == []


# --------------------------------------------------------------------------- connect time


def _provider(callback_url: str) -> ProviderState:
    return ProviderState(
        id="prov_x",
        user_id="u",
        name="rig",
        transport="direct",
        callback_url=callback_url,
        visibility="private",
        agent_secret="s3cret",
        services=[],
        last_seen=0.0,
        created=0,
    )


def _request(path: str = "/v1/chat/completions?trace=1") -> UpstreamRequest:
    async def body() -> AsyncIterator[bytes]:
        yield b"{}"

    return UpstreamRequest(
        service_type="llm",
        model="m",
        method="POST",
        path=path,
        headers={"content-type": "application/json"},
        body=body,
        request_id="req_1",
    )


class Rebinding:
    """A resolver whose answer changes after the first lookup (DNS rebinding)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return [self.answers[min(self.lookups, 2) - 1]]


async def test_dns_rebinding_is_caught_at_connect_time() -> None:
    """The agent's name resolves to the agent at heartbeat, to a denied victim afterwards.

    Both listen on the same port, on 127.0.0.1 and 127.0.0.2: only the address differs.
    """
    port = free_port()
    resolver = Rebinding("127.0.0.1", "127.0.0.2")
    policy = CallbackPolicy(deny_cidrs=["127.0.0.2/32"], resolver=resolver, resolve_ttl_s=0)
    client = pooled_client(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=10), shards=1)
    transport = DirectTransport(client, policy)
    async with recorder("127.0.0.1", port) as (agent, _), recorder("127.0.0.2", port) as (victim, _):
        target = parse_callback_url(f"http://agent.example:{port}/base")
        assert await policy.addresses(target) == [ipaddress.ip_address("127.0.0.1")]  # heartbeat time
        provider = _provider(str(target))
        with pytest.raises(TransportUnavailable, match="blocked"):
            await transport.send(provider, _request())
        assert victim.hits == [] and agent.hits == []
    await client.aclose()


async def test_relay_urls_are_built_from_parts_and_keep_the_host_name() -> None:
    port = free_port()
    lookups: list[str] = []

    async def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    policy = CallbackPolicy(resolver=resolver)
    client = pooled_client(timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_connections=10), shards=1)
    transport = DirectTransport(client, policy)
    async with recorder("127.0.0.1", port) as (agent, _):
        response = await transport.send(_provider(f"http://agent.example:{port}/base"), _request())
        await response.aclose()
        response = await transport.send(_provider(f"http://agent.example:{port}/base"), _request())
        await response.aclose()
    await client.aclose()
    assert agent.hits == [("/base/relay/llm/v1/chat/completions", "trace=1", f"agent.example:{port}")] * 2
    assert lookups == ["agent.example"]  # resolved once, then served from the short cache


async def test_a_name_with_one_blocked_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "::ffff:169.254.169.254"]

    policy = CallbackPolicy(deny_cidrs=["169.254.0.0/16"], resolver=resolver)
    with pytest.raises(CallbackBlocked, match=r"169\.254\.169\.254"):
        await policy.addresses(parse_callback_url("http://mixed.example/"))


async def test_unresolvable_names_are_refused_at_heartbeat(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        async with asyncio.timeout(30):
            answer = await http.post(HEARTBEAT, json=_heartbeat("http://no-such-host.invalid:9/"))
    assert answer.status_code == 400 and "does not resolve" in answer.json()["error"]["message"]
