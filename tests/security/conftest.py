"""Security suite fixtures: hostile engines and agents, hubs with small answer caps, hub processes.

Shared by every file of ``tests/security``. The attacks come from
``inference_club.testing.hostile_engine``; the hubs are the real ones (in process on a
loopback socket, or as ``inference-club serve`` processes where memory is measured).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference_club.testing.hostile_engine import Attack, HostileEngine, serve_hostile
from tests.conftest import RunningHub, make_settings, running_hub
from tests.e2e.conftest import HubProcess, start_hub

# Small caps, so that the attacks in process stay cheap.
# The media cap is above 3/4 of the answer cap, so an over-cap base64 answer hits the answer cap first.
SMALL_CAPS: dict[str, int] = {
    "max_answer_bytes": 2_000_000,
    "max_media_bytes": 1_600_000,
    "max_json_answer_bytes": 64_000,
}


def direct_heartbeat(name: str, callback_url: str, services: dict[str, list[str]]) -> dict[str, Any]:
    """The heartbeat of a direct provider at ``callback_url`` (service type → model ids)."""
    return {
        "name": name,
        "transport": "direct",
        "callback_url": callback_url,
        "services": [
            {"type": kind, "max_concurrency": 8, "models": [{"id": m} for m in models]}
            for kind, models in services.items()
        ],
    }


async def register_direct(
    hub_url: str, key: str, name: str, callback_url: str, services: dict[str, list[str]]
) -> None:
    """Make the hostile engine a direct provider: it is its own (hostile) agent."""
    async with httpx.AsyncClient(base_url=hub_url, headers={"Authorization": f"Bearer {key}"}) as http:
        answer = await http.post(
            "/api/inference/agent/heartbeat", json=direct_heartbeat(name, callback_url, services)
        )
        assert answer.status_code == 200, answer.text


def client(hub_url: str, key: str, timeout: float = 60.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[HostileEngine, str]]:
    """A hostile engine on a loopback port (default attack: a small valid images answer)."""
    async with serve_hostile(Attack()) as running:
        yield running


@pytest.fixture
async def small_caps_hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A hub (in process, real socket) whose answer caps are a few megabytes."""
    async with running_hub(make_settings(tmp_path / "data", None, **SMALL_CAPS)) as running:
        yield running


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[HubProcess]:
    """``inference-club serve`` as its own process (its memory can be measured)."""
    process = start_hub(tmp_path, env={"IC_LOG_LEVEL": "warning"})
    try:
        yield process
    finally:
        process.handle.stop(timeout=5)
