"""``create_app(settings)`` builds everything from its settings: two apps side by side share nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_club.errors import NotFound
from inference_club.settings import UnsafeSettings
from inference_club.surfaces.app import create_app
from tests.conftest import make_settings
from tests.unit.surfaces.conftest import in_process


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_two_apps_with_different_settings_share_no_state(tmp_path: Path) -> None:
    one = make_settings(
        tmp_path / "one", metrics_token="token-one", max_body_bytes=64 * 1024, secret_key="a" * 40
    )
    two = make_settings(tmp_path / "two", metrics_token="token-two", secret_key="b" * 40)
    async with in_process(one) as first, in_process(two) as second:
        assert first.hub is not second.hub and first.hub.settings is one and second.hub.settings is two
        assert first.app.state.metrics is not second.app.state.metrics
        assert first.app.state.dashboard is not second.app.state.dashboard

        # Each hub has its own database.
        await first.hub.accounts.create_user("alice")
        with pytest.raises(NotFound):
            await second.hub.accounts.get_user_by_name("alice")
        assert (tmp_path / "one" / "hub.db").exists() and (tmp_path / "two" / "hub.db").exists()

        # Each app reads its own limits and tokens.
        await second.hub.accounts.create_user("alice")
        keys = [(await h.accounts.create_key("alice")).raw for h in (first.hub, second.hub)]
        body = b'{"model": "m", "input": "' + b"x" * (100 * 1024) + b'"}'
        too_large = await first.client.post("/v1/embeddings", content=body, headers=bearer(keys[0]))
        assert too_large.status_code == 413
        fits = await second.client.post("/v1/embeddings", content=body, headers=bearer(keys[1]))
        assert fits.status_code == 404 and "model" in fits.json()["error"]["message"]
        assert (await second.client.get("/v1/models", headers=bearer(keys[0]))).status_code == 401
        assert (
            await first.client.get("/metrics", headers={"authorization": "Bearer token-two"})
        ).status_code == 401

        # ... and counts its own requests.
        for _ in range(3):
            assert (await first.client.get("/healthz")).status_code == 200
        scraped_one = await first.client.get("/metrics", headers={"authorization": "Bearer token-one"})
        scraped_two = await second.client.get("/metrics", headers={"authorization": "Bearer token-two"})
        assert scraped_one.status_code == scraped_two.status_code == 200
        assert 'route="/healthz"' in scraped_one.text and 'route="/healthz"' not in scraped_two.text

        # A session signed by one app's secret means nothing to the other.
        signer = first.app.state.dashboard.signer
        user = await first.hub.accounts.get_user_by_name("alice")
        cookie, _ = signer.issue(user.id, user.password_hash)
        assert second.app.state.dashboard.signer.read(cookie) is None
        assert signer.read(cookie) is not None


def test_building_an_app_starts_nothing_and_refuses_unsafe_settings(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))
    assert not hasattr(app.state, "hub")  # the hub starts with the lifespan, not at build time
    assert not (tmp_path / "data").exists()
    with pytest.raises(UnsafeSettings):
        create_app(make_settings(tmp_path / "prod", environment="production"))


async def test_the_hub_stops_with_the_lifespan(tmp_path: Path) -> None:
    async with in_process(make_settings(tmp_path / "data")) as running:
        hub = running.hub
        assert (await running.client.get("/readyz")).status_code == 200
    assert hub.http.is_closed
