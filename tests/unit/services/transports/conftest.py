"""The tunnel tests' hub services and the fake agents a test connects (closed after it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.services.built_hub import Built, built_hub
from tests.unit.services.transports.tunnel_rig import FakeAgent


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


@pytest.fixture
async def agents(built: Built) -> AsyncIterator[list[FakeAgent]]:
    made: list[FakeAgent] = []
    yield made
    for agent in made:
        await agent.close()
