"""The whole app from ``create_app`` in process: httpx over ``ASGITransport``, no socket.

Starting a hub costs most of a second, so a test module shares one (module-scoped, on
the module's event loop: such a module sets ``pytestmark = MODULE_LOOP``) and each test
makes users of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from inference_club.services.container import Hub
from inference_club.settings import Settings
from inference_club.surfaces.app import create_app
from tests.conftest import make_settings

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
BASE_URL = "http://hub.test"

_names = itertools.count(1)


@dataclass
class InProcessHub:
    app: FastAPI
    hub: Hub
    http: httpx.AsyncClient

    async def new_key(self, prefix: str = "user", *, admin: bool = False, routing: str = "own-first") -> str:
        """A fresh user (unique name) and an API key for it."""
        name = f"{prefix}{next(_names)}"
        await self.hub.accounts.create_user(name, is_admin=admin, routing_preference=routing)
        return (await self.hub.accounts.create_key(name)).raw

    async def user_id(self, key: str) -> str:
        return (await self.hub.auth.authenticate(f"Bearer {key}")).user_id

    async def heartbeat(self, key: str, name: str, models: dict[str, list[str]], **extra: Any) -> str:
        """Register a provider of the key's user serving ``models`` (service type → ids)."""
        body = {
            "name": name,
            "transport": "direct",
            # The discard port: nothing answers, which is all a route test needs.
            "callback_url": "http://127.0.0.1:9",
            "services": [
                {"type": kind, "max_concurrency": 2, "models": [{"id": m} for m in ids]}
                for kind, ids in models.items()
            ],
            **extra,
        }
        answer = await self.http.post("/api/inference/agent/heartbeat", json=body, headers=auth(key))
        assert answer.status_code == 200, answer.text
        provider_id: str = answer.json()["provider_id"]
        return provider_id


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def in_process_hub(settings: Settings) -> AsyncIterator[InProcessHub]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=10) as http:
            yield InProcessHub(app=app, hub=app.state.hub, http=http)


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    """Settings of the module's hub beyond ``make_settings``; a module overrides this fixture."""
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(
    tmp_path_factory: pytest.TempPathFactory, hub_overrides: dict[str, object]
) -> AsyncIterator[InProcessHub]:
    data_dir = tmp_path_factory.mktemp("hub") / "data"
    async with in_process_hub(make_settings(data_dir, None, **hub_overrides)) as running:
        yield running
