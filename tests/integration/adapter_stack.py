"""Hub + agent + a native engine stub, for the adapter tests (reuses conftest's pieces)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from inference_club.agent.runner import AgentRunner
from inference_club.testing.servers import serve_app
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import run_agent


@dataclass
class EngineStack:
    hub: RunningHub
    key: str
    engine_url: str
    agent: AgentRunner

    def http(self, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.hub.base_url, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"}
        )


@asynccontextmanager
async def adapter_hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A hub whose jobs run once (no retry) and are picked up quickly."""
    settings = make_settings(
        tmp_path / "data", job_max_attempts=1, job_poll_interval_s=0.05, upstream_timeout_s=30.0
    )
    async with running_hub(settings) as hub:
        yield hub


@asynccontextmanager
async def engine_stack(
    hub: RunningHub,
    app: Any,
    service: dict[str, Any],
    *,
    transport: str = "direct",
    extra_services: list[dict[str, Any]] | None = None,
    user: str = "alice",
) -> AsyncIterator[EngineStack]:
    """Serve ``app`` (an engine stub) and run an agent whose services point at it (unless they name a URL)."""
    key = await hub.new_user(user)
    async with serve_app(app, shutdown_timeout_s=0.5) as url:
        services = [
            {"url": url, "discover": True, "max_concurrency": 2, **extra}
            for extra in (service, *(extra_services or []))
        ]
        async with run_agent(hub.base_url, key, f"{user}-rig", services, transport=transport) as agent:
            yield EngineStack(hub=hub, key=key, engine_url=url, agent=agent)


async def wait_job(http: httpx.AsyncClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = await http.get(f"/v1/jobs/{job_id}", params={"wait": 5})
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["status"] in ("PROCESSED", "FAILED", "CANCELED") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
