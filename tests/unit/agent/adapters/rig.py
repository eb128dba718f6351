"""Shared pieces of the adapter tests: service configs, hub calls, and an adapter bound to
an engine stub served on a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from inference_club.agent.adapters import adapter_for
from inference_club.agent.adapters.base import Adapter, EngineCall
from inference_club.agent.config import ServiceConfig


def service(**values: Any) -> ServiceConfig:
    base: dict[str, Any] = {"type": "image", "url": "http://127.0.0.1:1", "engine": "a1111"}
    base.update(values)
    return ServiceConfig(**base)


class Reports(list[tuple[float, str]]):
    """Collects an adapter's progress reports (pass it as ``EngineCall.report``)."""

    def __call__(self, value: float, stage: str) -> None:
        self.append((value, stage))

    def stages(self) -> list[str]:
        return [stage for _, stage in self]


def json_call(
    route: str, body: dict[str, Any], model: str = "m", report: Reports | None = None
) -> EngineCall:
    call = EngineCall("POST", route, {}, "application/json", orjson.dumps(body), model, "req")
    if report is not None:
        call.report = report
    return call


def form_call(
    route: str,
    fields: dict[str, str],
    files: dict[str, tuple[str, bytes, str]] | None = None,
    model: str = "m",
    report: Reports | None = None,
) -> EngineCall:
    """A multipart hub request, encoded the way a client library sends it."""
    request = httpx.Request("POST", "http://hub.test", data=fields, files=files or {})
    body = request.read()
    call = EngineCall("POST", route, {}, request.headers["content-type"], body, model, "req")
    if report is not None:
        call.report = report
    return call


class StubHost:
    """One loopback server and HTTP client for a whole test module; each test mounts its own stub.

    Starting uvicorn and a client once per module rather than once per test keeps the adapter
    test files fast. Tests that use it run on the module's event loop (:data:`module_loop`).
    """

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.client = client
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "no engine stub is mounted"
        await self.app(scope, receive, send)

    @asynccontextmanager
    async def mount(self, app: Any) -> AsyncIterator[str]:
        """Serve ``app`` at the host's URL (yielded) until the block ends."""
        self.app = app
        try:
            yield self.url
        finally:
            self.app = None

    @asynccontextmanager
    async def adapter(self, app: Any, **service_values: Any) -> AsyncIterator[Adapter]:
        """The adapter ``adapter_for`` picks for a service pointing at ``app`` (mounted meanwhile)."""
        async with self.mount(app) as url:
            adapter = adapter_for(service(url=url, **service_values))
            assert adapter is not None
            adapter.bind(self.client)
            yield adapter


module_loop = pytest.mark.asyncio(loop_scope="module")
"""Marks a test that uses the module's :class:`StubHost` (it must run on that host's loop)."""
