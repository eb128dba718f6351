"""Relay hygiene: a response head the hub cannot relay safely is refused as ``upstream_error``.

An agent is untrusted. CR, LF or NUL in a header, a header name that is no token, or an
informational (1xx) status used to drop the client's connection or be relayed as is.
Now the client gets a complete 502 ``upstream_error`` answer on a connection that keeps
working. Direct transport: the hostile engine is the agent itself, on a raw socket.
Tunnel transport: a real agent whose relay sends the attack's head verbatim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from inference_club.agent.runner import AgentRunner
from inference_club.testing.hostile_engine import HostileAgentRelay, HostileEngine
from tests.conftest import RunningHub
from tests.integration.conftest import engine_server, run_agent
from tests.security.conftest import client, direct_heartbeat, register_direct

JSON = ["content-type", "application/json"]
# Attacks both transports can carry. On the raw HTTP wire a CR LF pair is just the next
# header line, so the header-injection attacks below exist on the tunnel only.
ATTACKS: dict[str, dict[str, Any]] = {
    "status 101": {"status": 101},
    "status 100": {"status": 100},
    "NUL in a value": {"headers": [["content-type", "application/json\u0000"]]},
    "CR in a value": {"headers": [["x-engine", "a\rb"], JSON]},
    "LF in a value": {"headers": [["x-engine", "a\nb"], JSON]},
    "bad header name": {"headers": [["bad name", "x"], JSON]},
}
TUNNEL_ONLY: dict[str, dict[str, Any]] = {
    "CRLF header injection": {
        "headers": [["content-type", "application/json\r\nset-cookie: session=stolen"]]
    },
    "NUL in a name": {"headers": [["x-a\u0000b", "x"], JSON]},
    "non-latin-1 content type": {"headers": [["content-type", "application/json; charset=\u65e5\u672c"]]},
    "status 199": {"status": 199},
}


def chat(hostile: dict[str, Any]) -> dict[str, Any]:
    return {"model": "hostile-chat", "messages": [{"role": "user", "content": "hi"}], "hostile": hostile}


async def assert_refused_then_usable(
    http: httpx.AsyncClient, attack: dict[str, Any], *, by_hub: bool = True
) -> None:
    answer = await http.post("/v1/chat/completions", json=chat(attack))
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["type"] == "upstream_error"
    if by_hub:
        assert "hostile-rig" in error["message"]
    assert "set-cookie" not in answer.headers
    # Same client connection, honest answer: nothing was left half-sent.
    honest = await http.post("/v1/chat/completions", json=chat({"answer": "json"}))
    assert honest.status_code == 200, honest.text
    assert honest.json()["choices"][0]["message"]["content"] == "hostile"


@pytest.fixture
async def direct_rig(hub: RunningHub, hostile: tuple[HostileEngine, str]) -> AsyncIterator[httpx.AsyncClient]:
    _, url = hostile
    key = await hub.new_user("victim")
    await register_direct(hub.base_url, key, "hostile-rig", url, {"llm": ["hostile-chat"]})
    async with client(hub.base_url, key, timeout=20) as http:
        yield http


@pytest.fixture
async def tunnel_rig(hub: RunningHub, hostile: tuple[HostileEngine, str]) -> AsyncIterator[httpx.AsyncClient]:
    _, url = hostile
    key = await hub.new_user("victim")
    services = [{"type": "llm", "url": f"{url}/v1", "discover": False, "models": [{"id": "hostile-chat"}]}]
    async with (
        run_agent(hub.base_url, key, "hostile-rig", services, transport="tunnel") as agent,
        client(hub.base_url, key, timeout=20) as http,
    ):
        tunnel = agent.transport
        tunnel.relay = HostileAgentRelay(tunnel.relay)  # type: ignore[attr-defined]
        yield http


# One hub and agent for all the attacks of a transport (they are cheap, the setup is not).


async def test_hostile_heads_over_the_direct_transport_are_refused(direct_rig: httpx.AsyncClient) -> None:
    for name, attack in ATTACKS.items():
        try:
            await assert_refused_then_usable(direct_rig, {"answer": "json", **attack})
        except AssertionError as exc:
            raise AssertionError(f"attack {name!r}: {exc}") from exc


async def test_hostile_heads_over_the_tunnel_are_refused(tunnel_rig: httpx.AsyncClient) -> None:
    for name, attack in {**ATTACKS, **TUNNEL_ONLY}.items():
        try:
            await assert_refused_then_usable(tunnel_rig, attack)
        except AssertionError as exc:
            raise AssertionError(f"attack {name!r}: {exc}") from exc


async def test_informational_heads_before_the_answer_are_skipped_over_direct(
    direct_rig: httpx.AsyncClient,
) -> None:
    answer = await direct_rig.post(
        "/v1/chat/completions", json=chat({"answer": "json", "informational": [103]})
    )
    assert answer.status_code == 200, answer.text


async def test_an_engine_101_behind_a_real_tunnel_agent_is_refused(
    hub: RunningHub, hostile: tuple[HostileEngine, str]
) -> None:
    _, url = hostile
    key = await hub.new_user("victim")
    services = [{"type": "llm", "url": f"{url}/v1", "discover": False, "models": [{"id": "hostile-chat"}]}]
    async with (
        run_agent(hub.base_url, key, "hostile-rig", services, transport="tunnel"),
        client(hub.base_url, key, timeout=20) as http,
    ):
        # The honest agent's HTTP client already refuses it; the hub never sees a 101.
        await assert_refused_then_usable(http, {"answer": "json", "status": 101}, by_hub=False)


MODEL = "mod\u00e8le-\u65e5\u672c"


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
async def test_a_non_ascii_model_id_works_end_to_end(hub: RunningHub, transport: str) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        services = [{"type": "llm", "url": f"{url}/v1", "discover": False, "models": [{"id": MODEL}]}]
        agent: AgentRunner = await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig", services, transport=transport)
        )
        assert agent is not None
        http = await exits.enter_async_context(client(hub.base_url, key, timeout=20))
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "bonjour"}]},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == MODEL
        last = state.stats.last_request
        assert last is not None and last.model == MODEL


async def test_a_model_id_with_control_characters_is_refused_at_heartbeat(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    body = direct_heartbeat("rig", "http://127.0.0.1:9", {"llm": ["fine", "bad\r\nid"]})
    async with client(hub.base_url, key) as http:
        answer = await http.post("/api/inference/agent/heartbeat", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "services.0.models.1.id"


async def test_a_utf8_content_type_over_direct_is_relayed_byte_for_byte(
    direct_rig: httpx.AsyncClient,
) -> None:
    content_type = "application/json; charset=\u65e5\u672c"
    answer = await direct_rig.post(
        "/v1/chat/completions", json=chat({"answer": "json", "headers": [["content-type", content_type]]})
    )
    assert answer.status_code == 200, answer.text
    assert (
        answer.headers.raw[[k.lower() for k, _ in answer.headers.raw].index(b"content-type")][1]
        == content_type.encode()
    )
