"""The application factory: ``create_app(settings)`` builds everything; nothing at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inference_club import __version__
from inference_club.services.container import build_hub
from inference_club.settings import Settings
from inference_club.surfaces.http import (
    agent,
    batches,
    docs,
    error_handlers,
    files,
    health,
    inference,
    jobs,
    models,
)
from inference_club.surfaces.http import tunnel as tunnel_routes
from inference_club.surfaces.http.middleware import (
    BodyLimitMiddleware,
    RequestIdMiddleware,
    TrailingSlashMiddleware,
)

DESCRIPTION = """\
An OpenAI-compatible hub in front of model servers that run on your own machines.
Authenticate with `Authorization: Bearer <key>`. Errors use OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`; authentication and malformed-JSON
errors use `{"detail": ...}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check_safe()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.log_level.lower() != "debug":
        # One INFO line per call to an agent costs measurable CPU on the hot path.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = build_hub(settings)
        await hub.start()
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(
        title="inference-club",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    error_handlers.install(app)
    for module in (health, models, inference, jobs, batches, files, agent, docs):
        app.include_router(module.router)
    app.include_router(tunnel_routes.router)
    docs.mount_static(app)
    # Outermost last: the request id wraps everything, including 413s from the body limit.
    app.add_middleware(BodyLimitMiddleware, json_limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    app.add_middleware(TrailingSlashMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
