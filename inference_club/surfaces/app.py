"""The application factory: ``create_app(settings)`` builds everything; nothing at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inference_club import __version__
from inference_club.redact import install_log_redaction
from inference_club.services.container import build_hub
from inference_club.services.metrics import HubMetrics
from inference_club.settings import Settings
from inference_club.surfaces.dashboard import routes as dashboard
from inference_club.surfaces.http import (
    agent,
    batches,
    docs,
    error_handlers,
    files,
    health,
    inference,
    internal_relay,
    jobs,
    management,
    metrics,
    models,
    openapi_doc,
    workflows,
)
from inference_club.surfaces.http import tunnel as tunnel_routes
from inference_club.surfaces.http.fast_path import HubApp
from inference_club.surfaces.http.middleware import BodyLimitMiddleware, TrailingSlashMiddleware
from inference_club.surfaces.http.observe import RequestObserver
from inference_club.surfaces.http.security_headers import SecurityHeadersMiddleware
from inference_club.telemetry.logformat import configure_logging, log_lines_per_turn

DESCRIPTION = """\
An OpenAI-compatible hub in front of model servers that run on your own machines.
Authenticate with `Authorization: Bearer <key>`. Errors use OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`; authentication, malformed-JSON,
unknown-path and wrong-method answers also carry `{"detail": ...}` beside it.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check_safe()
    configure_logging(settings.log_level, settings.log_format)
    install_log_redaction()  # keys, tokens and signatures never reach a log line
    if settings.log_level.lower() != "debug":
        # One INFO line per call to an agent costs measurable CPU on the hot path.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    hub_metrics = HubMetrics(refresh_s=settings.metrics_refresh_s)  # this app's own registry

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = build_hub(settings)
        hub_metrics.attach(hub)
        with log_lines_per_turn(asyncio.get_running_loop()):
            await hub.start()
            app.state.hub = hub
            try:
                yield
            finally:
                await hub.stop()

    app = HubApp(
        title="inference-club",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = hub_metrics
    error_handlers.install(app)
    for module in (
        health,
        metrics,
        models,
        inference,
        jobs,
        batches,
        workflows,
        files,
        management,
        agent,
        docs,
    ):
        app.include_router(module.router)
    app.include_router(tunnel_routes.router)
    app.router.routes.append(internal_relay.route)  # between replicas; not in the API document
    docs.mount_static(app)
    openapi_doc.install(app)
    dashboard.install(app, settings)
    # Outermost last. The observer is innermost, so it sees the route template the router
    # matched (after the trailing slash is gone); 413s from the body limit reach it as answers.
    app.add_middleware(RequestObserver, metrics=hub_metrics)
    app.add_middleware(
        BodyLimitMiddleware, json_limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes
    )
    app.add_middleware(TrailingSlashMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    # After the middleware: the short way passes through it too.
    app.use_fast_routes(inference.fast_routes(), jobs.fast_routes())
    return app
