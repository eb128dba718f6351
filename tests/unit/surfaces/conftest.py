"""The whole app from ``create_app(settings)``, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from inference_club.services.container import Hub
from inference_club.settings import Settings
from inference_club.surfaces.app import create_app

BASE_URL = "http://hub.test"


@dataclass
class InProcessHub:
    app: FastAPI
    hub: Hub
    client: httpx.AsyncClient

    def browser(self, **headers: str) -> httpx.AsyncClient:
        """Another client (its own cookie jar) on the same app."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL, headers=headers
        )


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[InProcessHub]:
    """Build the app, run its lifespan (the hub starts and stops with it), and a client on it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
            yield InProcessHub(app=app, hub=app.state.hub, client=client)
