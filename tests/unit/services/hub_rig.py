"""A whole hub on a loopback socket, a user, and real agents (direct transport) in front of
the fake engine, for unit tests of the services that route and answer calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from inference_club.agent.runner import AgentRunner
from inference_club.domain.endpoints import Endpoint
from inference_club.services.auth import Principal
from inference_club.services.bodies import JsonBody
from inference_club.services.executors import Call
from inference_club.services.router import Router
from inference_club.services.transports.base import UpstreamRequest
from inference_club.testing.fake_state import FakeEngineState
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for


@dataclass
class Rig:
    hub: RunningHub
    principal: Principal
    exits: AsyncExitStack
    key: str

    @property
    def router(self) -> Router:
        return self.hub.hub.router

    def call(self, endpoint: Endpoint, data: dict[str, Any]) -> Call:
        return Call(
            self.principal,
            endpoint,
            str(data["model"]),
            JsonBody(orjson.dumps(data), data),
            "req_unit",
            self.hub.base_url,
        )

    def request(self, endpoint: Endpoint, model: str) -> UpstreamRequest:
        return self.call(endpoint, {"model": model, "input": "hello"}).upstream_request()

    async def agent(
        self, name: str, *, types: Sequence[str], max_concurrency: int = 4
    ) -> tuple[AgentRunner, FakeEngineState]:
        state, url = await self.exits.enter_async_context(engine_server())
        runner = await self.exits.enter_async_context(
            run_agent(
                self.hub.base_url,
                self.key,
                name,
                services_for(url, max_concurrency=max_concurrency, types=types),
            )
        )
        return runner, state

    def provider_id(self, name: str) -> str:
        found = self.hub.hub.registry.find(self.principal.user_id, name)
        assert found is not None
        return found.id


@asynccontextmanager
async def hub_rig(tmp_path: Path, **settings: Any) -> AsyncIterator[Rig]:
    async with (
        running_hub(make_settings(tmp_path / "data", None, **settings)) as hub,
        AsyncExitStack() as exits,
    ):
        key = await hub.new_user("alice")
        principal = await hub.hub.auth.authenticate(f"Bearer {key}")
        yield Rig(hub, principal, exits, key)
