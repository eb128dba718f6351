"""``install`` wires the dashboard into an app: its own state from the settings, the sign-in
page and the static files, with nothing shared between two apps."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from inference_club.surfaces.dashboard.routes import STATIC_PREFIX, install
from tests.conftest import make_settings


async def test_install_builds_the_dashboard_from_the_settings(tmp_path: Path) -> None:
    short, long = FastAPI(), FastAPI()
    install(short, make_settings(tmp_path, session_ttl_s=60, secret_key="s" * 40))
    install(long, make_settings(tmp_path, session_ttl_s=3600, secret_key="t" * 40))
    assert short.state.dashboard.signer.ttl_s == 60 and long.state.dashboard.signer.ttl_s == 3600
    assert short.state.dashboard.throttle is not long.state.dashboard.throttle
    cookie, _ = short.state.dashboard.signer.issue("usr_1", None)
    assert long.state.dashboard.signer.read(cookie) is None

    transport = httpx.ASGITransport(app=short)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        login = await client.get("/dashboard/login")  # the sign-in page needs no hub
        assert login.status_code == 200 and 'name="csrf_token"' in login.text
        for name, kind in (
            ("dashboard.css", "text/css"),
            ("dashboard.js", "javascript"),
            ("favicon.svg", "image/svg"),
        ):
            asset = await client.get(f"{STATIC_PREFIX}/{name}")
            assert asset.status_code == 200 and kind in asset.headers["content-type"], name
