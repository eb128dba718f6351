"""Fixtures for the agent's tests: stubs served on real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inference_club.testing.servers import serve_app

from .stubs import EngineStub, FakeHub


@pytest.fixture
async def engine_stub() -> AsyncIterator[tuple[EngineStub, str]]:
    stub = EngineStub()
    async with serve_app(stub) as base:
        yield stub, base
        stub.release.set()


@pytest.fixture
async def fake_hub() -> AsyncIterator[tuple[FakeHub, str]]:
    fake = FakeHub()
    async with serve_app(fake) as base:
        yield fake, base
