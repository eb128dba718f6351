"""Wire the dashboard into the app: its pages, session routes, sign-in and static files."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from inference_club.settings import Settings
from inference_club.surfaces.dashboard import api, pages, signin, workflow_pages
from inference_club.surfaces.dashboard.security import Dashboard

STATIC_PREFIX = "/dashboard/static"


def install(app: FastAPI, settings: Settings) -> None:
    app.state.dashboard = Dashboard.build(settings)
    for module in (signin, api, pages, workflow_pages):
        app.include_router(module.router)
    app.include_router(workflow_pages.api_router)
    static = resources.files("inference_club.surfaces.dashboard") / "static"
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(static)), name="dashboard-static")
