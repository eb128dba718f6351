"""The adapter tests' loopback server, shared by the tests of one module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from inference_club.testing.servers import serve_app

from .rig import StubHost


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub_host() -> AsyncIterator[StubHost]:
    host = StubHost("", httpx.AsyncClient(trust_env=False))
    async with serve_app(host, shutdown_timeout_s=0.5, lifespan="off") as url:
        host.url = url
        async with host.client:  # closed first, so the server stops without waiting on it
            yield host
