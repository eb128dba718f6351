"""A whole stack on loopback: hub, fake engine, and in-process agents (tunnel and direct transports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from inference_club.agent.config import build_config
from inference_club.agent.runner import AgentRunner
from inference_club.testing.fake_engine import FakeEngineState, create_fake_engine
from inference_club.testing.servers import serve_app
from tests.conftest import RunningHub

# Service type → fake model, with the features the operator would declare.
FAKE_SERVICES: dict[str, tuple[str, list[str]]] = {
    "llm": ("fake-chat", ["streaming", "tools"]),
    "embedding": ("fake-embed", []),
    "stt": ("fake-whisper", ["timestamps"]),
    "tts": ("fake-tts", []),
    "image": ("fake-image", []),
    "music": ("fake-music", []),
    "video": ("fake-video", []),
    "mesh": ("fake-mesh", []),
}


def services_for(
    engine_url: str, *, max_concurrency: int = 4, types: Sequence[str] | None = None, discover: bool = False
) -> list[dict[str, Any]]:
    services = []
    for service_type, (model, features) in FAKE_SERVICES.items():
        if types is not None and service_type not in types:
            continue
        models = [{"id": model, "features": features}]
        if service_type == "tts":
            models.append({"id": "fake-voice", "features": ["voice-cloning"]})
        services.append(
            {
                "type": service_type,
                "url": f"{engine_url}/v1",
                "max_concurrency": max_concurrency,
                "discover": discover,
                "models": models,
            }
        )
    return services


@asynccontextmanager
async def run_agent(
    hub_url: str, key: str, name: str, services: list[dict[str, Any]], transport: str = "direct"
) -> AsyncIterator[AgentRunner]:
    config = build_config(
        {
            "hub": hub_url,
            "key": key,
            "name": name,
            "transport": transport,
            "listen": "127.0.0.1:0",
            "services": services,
        }
    )
    runner = AgentRunner(config, report_gpus=False)
    await runner.start()
    try:
        await runner.heartbeat.poke_and_wait() if hasattr(runner.heartbeat, "poke_and_wait") else None
        import asyncio

        async with asyncio.timeout(10):
            await runner.registered.wait()
        yield runner
    finally:
        await runner.stop()


@dataclass
class Stack:
    hub: RunningHub
    key: str
    engine: FakeEngineState
    engine_url: str
    agents: list[AgentRunner] = field(default_factory=list)
    transport: str = "direct"

    def client(self, key: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.hub.base_url}/v1", api_key=key or self.key, max_retries=0, **kwargs
        )

    def sync_client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.hub.base_url}/v1", api_key=key or self.key, max_retries=0)

    def http(self, key: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.hub.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {key or self.key}"},
        )


@asynccontextmanager
async def engine_server(state: FakeEngineState | None = None) -> AsyncIterator[tuple[FakeEngineState, str]]:
    state = state or FakeEngineState()
    async with serve_app(create_fake_engine(state), shutdown_timeout_s=0.5) as url:
        yield state, url


@pytest.fixture(params=["direct", "tunnel"])
async def stack(hub: RunningHub, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    transport: str = request.param
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        agent = await exits.enter_async_context(
            run_agent(hub.base_url, key, "home-rig", services_for(url), transport=transport)
        )
        yield Stack(hub=hub, key=key, engine=state, engine_url=url, agents=[agent], transport=transport)
