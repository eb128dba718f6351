"""``build_hub`` chooses the hub's parts from its settings: in-process capacity, limits and
local files when embedded; shared state in Redis (and relaying only with a cluster secret)
when scaled out; the S3 store (and presigned downloads) when configured. The embedded hub
starts with the providers its database knows and stops cleanly. Nothing here connects to Redis or S3."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inference_club.cluster.capacity import RedisCapacity
from inference_club.cluster.ratelimit import SharedRateLimiter
from inference_club.cluster.relay import RelayClient
from inference_club.domain.providers import HeartbeatBody, ModelDecl, ServiceDecl
from inference_club.services.capacity import Capacity
from inference_club.services.container import Hub, build_hub
from inference_club.services.ratelimit import LocalRateLimiter
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.settings import UnsafeSettings
from inference_club.store.filestore import LocalFileStore
from inference_club.store.s3store import S3FileStore
from inference_club.store.tables import StoredFile
from tests.conftest import make_settings
from tests.unit.services.built_hub import built_hub

REDIS = "redis://127.0.0.1:1/0"  # never reached: nothing is started
RECORD = StoredFile(
    id="file_x",
    user_id="u",
    filename="x",
    content_type="image/png",
    bytes=0,
    purpose="output",
    storage_key="file_x",
)


async def close_unstarted(hub: Hub) -> None:
    await hub.http.aclose()
    if hub.redis is not None:
        await hub.redis.aclose()
    await hub.database.dispose()


async def test_the_embedded_hub_keeps_everything_in_process_and_starts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    async with built_hub(tmp_path) as before:  # a provider registered by an earlier run
        await before.hub.registry.heartbeat(
            before.principal,
            HeartbeatBody(
                name="box",
                callback_url="http://127.0.0.1:9",
                services=[ServiceDecl(type="llm", models=[ModelDecl(id="m")])],
            ),
        )
    hub = build_hub(settings)
    assert isinstance(hub.capacity, Capacity) and isinstance(hub.limiter, LocalRateLimiter)
    assert isinstance(hub.files.store, LocalFileStore) and hub.files.download_redirect(RECORD) is None
    assert (hub.redis, hub.presence, hub.events, hub.tunnel_directory, hub.shared_capacity) == (None,) * 5
    assert set(hub.transports.by_name) == {"direct", "tunnel"}
    tunnel = hub.transports.by_name["tunnel"]
    assert isinstance(tunnel, TunnelTransport) and tunnel.relay is None
    assert tunnel.server.on_progress == hub.progress.report  # progress frames reach the jobs
    await hub.start()
    try:
        assert sorted(p.name for p in hub.registry.all()) == ["box", "rig"]  # loaded at start
        assert "running" in repr(hub.key_watch)
    finally:
        await hub.stop()
    assert "idle" in repr(hub.key_watch)


def test_production_refuses_development_defaults(tmp_path: Path) -> None:
    with pytest.raises(UnsafeSettings):
        build_hub(make_settings(tmp_path / "data", environment="production"))


async def test_a_scaled_out_hub_shares_state_but_relays_only_with_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference_club"):
        hub = build_hub(make_settings(tmp_path / "a", redis_url=REDIS))
    try:
        assert isinstance(hub.capacity, RedisCapacity) and hub.shared_capacity is hub.capacity
        assert isinstance(hub.limiter, SharedRateLimiter)
        assert hub.presence is not None and hub.events is not None and hub.redis is not None
        assert hub.tunnel_directory is None
        tunnel = hub.transports.by_name["tunnel"]
        assert isinstance(tunnel, TunnelTransport) and tunnel.relay is None
        assert any("IC_CLUSTER_SECRET" in r.getMessage() for r in caplog.records)
    finally:
        await close_unstarted(hub)

    hub = build_hub(make_settings(tmp_path / "b", redis_url=REDIS, cluster_secret="s" * 40))
    try:
        assert hub.tunnel_directory is not None
        tunnel = hub.transports.by_name["tunnel"]
        assert isinstance(tunnel, TunnelTransport) and isinstance(tunnel.relay, RelayClient)
        assert tunnel.server.on_holding is not None  # held tunnels are advertised
    finally:
        await close_unstarted(hub)


async def test_files_go_to_s3_when_configured(tmp_path: Path) -> None:
    s3 = {
        "s3_endpoint": "http://127.0.0.1:1",
        "s3_bucket": "b",
        "s3_access_key_id": "id",
        "s3_secret_access_key": "secret",
    }
    hub = build_hub(make_settings(tmp_path / "a", **s3, s3_presigned_downloads=True))
    try:
        assert isinstance(hub.files.store, S3FileStore)
        url = hub.files.download_redirect(RECORD)  # signed locally, nothing is sent
        assert url is not None and url.startswith("http://127.0.0.1:1/") and "file_x" in url
        assert "Signature" in url
    finally:
        await close_unstarted(hub)
    with pytest.raises(ValueError, match="IC_S3_BUCKET"):
        build_hub(make_settings(tmp_path / "b", **{**s3, "s3_bucket": None}))
