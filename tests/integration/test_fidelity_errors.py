"""What third-party clients tripped on: provider error text, empty streams, a busy engine,
an unreachable local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.types import Receive, Scope, Send

from inference_club.agent.config import build_config
from inference_club.agent.discovery import LISTING_FAILURES_TO_DROP
from inference_club.agent.runner import AgentRunner
from inference_club.testing.fake_engine import FakeEngineState, Fault, create_fake_engine
from inference_club.testing.servers import serve_app
from tests.conftest import RunningHub
from tests.integration.conftest import Stack, run_agent

# One transport is enough here: both are covered by the inference tests.
tunnel_only = pytest.mark.parametrize("stack", ["tunnel"], indirect=True)

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
TRACEBACK = 'Traceback (most recent call last):\n  File "/home/member/llama/server.py", line 9\nKeyError: x'


@tunnel_only
async def test_engine_error_text_goes_to_the_provider_owner_only(stack: Stack) -> None:
    provider = stack.hub.hub.registry.all()[0]
    await stack.hub.hub.registry.set_visibility(provider.id, "shared")
    stack.engine.add_fault(Fault(status=500, body=TRACEBACK))
    bob = await stack.hub.new_user("bob")
    async with stack.http(bob) as http:
        answer = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "/home/member" not in answer.text and "Traceback" not in answer.text
    assert "500" in message and answer.headers["x-request-id"] in message
    async with stack.http() as http:  # the owner sees what their engine said
        own = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
    assert own.status_code == 502 and "/home/member/llama/server.py" in own.json()["error"]["message"]


@tunnel_only
async def test_engine_validation_errors_still_reach_every_caller(stack: Stack) -> None:
    provider = stack.hub.hub.registry.all()[0]
    await stack.hub.hub.registry.set_visibility(provider.id, "shared")
    envelope = {
        "error": {
            "message": "temperature must be <= 2",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    stack.engine.add_fault(Fault(status=400, body=envelope))
    bob = await stack.hub.new_user("bob")
    with pytest.raises(openai.BadRequestError) as rejected:
        await stack.client(bob).chat.completions.create(model="fake-chat", messages=CHAT)
    assert rejected.value.param == "temperature"


@tunnel_only
async def test_a_stream_ended_without_any_event_ends_with_an_error_event(stack: Stack) -> None:
    stack.engine.add_fault(Fault(status=200, body=""))
    async with stack.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "stream": True}
        )
    assert answer.status_code == 200
    assert answer.text.startswith("event: error\n")
    assert "without sending any event" in answer.text
    with pytest.raises(openai.APIError):  # the SDK raises instead of returning nothing
        stack.engine.add_fault(Fault(status=200, body=""))
        async for _ in await stack.client().chat.completions.create(
            model="fake-chat", messages=CHAT, stream=True
        ):
            pass


@tunnel_only
async def test_a_chat_stream_cut_before_done_is_flagged(stack: Stack) -> None:
    stack.engine.add_fault(Fault(status=200, body='data: {"choices": []}\n\n'))
    async with stack.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "stream": True}
        )
    assert answer.text.endswith("\n\n") and "event: error" in answer.text and "[DONE]" in answer.text


async def test_no_provider_says_the_local_server_is_unreachable(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    nothing_listens = {"type": "llm", "url": "http://127.0.0.1:9/v1", "models": []}
    async with run_agent(hub.base_url, key, "home-rig", [nothing_listens], transport="tunnel"):
        client = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="qwen3", messages=CHAT)
    assert missing.value.type == "no_provider"
    assert "Provider 'home-rig' is online but its llm server is unreachable" in str(missing.value)


class StallingListing:
    """The fake engine, except that ``/v1/models`` stalls while ``busy`` is set (like a
    llama.cpp server that lists only between generations)."""

    def __init__(self, state: FakeEngineState) -> None:
        self.app = create_fake_engine(state)
        self.busy = False
        self.stalled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/models" and self.busy:
            self.stalled += 1
            await asyncio.sleep(30)
        await self.app(scope, receive, send)


@asynccontextmanager
async def agent(hub_url: str, key: str, services: list[dict[str, Any]]) -> AsyncIterator[AgentRunner]:
    """An agent whose discovery the test drives by hand (``discovery.refresh()``)."""
    config = build_config(
        {
            "hub": hub_url,
            "key": key,
            "name": "home-rig",
            "transport": "tunnel",
            "services": services,
            "discover_interval": 3600,
        }
    )
    runner = AgentRunner(config, report_gpus=False)
    await runner.start()
    runner.discovery.timeout_s = 0.5  # the busy engine below stalls far longer
    try:
        async with asyncio.timeout(10):
            await runner.registered.wait()
        yield runner
    finally:
        await runner.stop()


async def test_a_busy_engine_keeps_its_models(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    engine = StallingListing(FakeEngineState())
    async with AsyncExitStack() as exits:
        url = await exits.enter_async_context(serve_app(engine, shutdown_timeout_s=0.5))
        discovered_only = {"type": "llm", "url": f"{url}/v1", "models": []}
        runner = await exits.enter_async_context(agent(hub.base_url, key, [discovered_only]))
        service = runner.catalog.services[0]
        client = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)
        assert (await client.chat.completions.create(model="fake-chat", messages=CHAT)).choices
        engine.busy = True
        for _ in range(LISTING_FAILURES_TO_DROP - 1):
            assert await runner.discovery.refresh() is False  # the listing stalls past the timeout
            assert "fake-chat" in [m.id for m in service.models]
            assert service.reachable is True  # alive, only busy
            assert (await client.chat.completions.create(model="fake-chat", messages=CHAT)).choices
        assert engine.stalled == LISTING_FAILURES_TO_DROP - 1
        # Repeated failures do take the models down; a good listing brings them back.
        assert await runner.discovery.refresh() is True
        assert not service.models
        engine.busy = False
        assert await runner.discovery.refresh() is True
        assert [m.id for m in service.models] == FakeEngineState().settings.models


async def test_a_refused_listing_takes_the_models_down_at_once(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        engine_exits = AsyncExitStack()
        url = await engine_exits.enter_async_context(
            serve_app(create_fake_engine(FakeEngineState()), shutdown_timeout_s=0.5)
        )
        discovered_only = {"type": "llm", "url": f"{url}/v1", "models": []}
        runner = await exits.enter_async_context(agent(hub.base_url, key, [discovered_only]))
        service = runner.catalog.services[0]
        assert service.models
        await engine_exits.aclose()  # nothing listens any more
        assert await runner.discovery.refresh() is True
        assert service.models == () and service.reachable is False
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            # Until the poked heartbeat has reached the hub, the agent itself answers 404.
            async with asyncio.timeout(10):
                while True:
                    answer = await http.post(
                        "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT}
                    )
                    assert answer.status_code == 404
                    if "online but" in answer.json()["error"]["message"]:
                        break
                    await asyncio.sleep(0.05)
        assert answer.json()["error"]["type"] == "no_provider"
        assert "'home-rig' is online but its llm server is unreachable" in answer.json()["error"]["message"]
