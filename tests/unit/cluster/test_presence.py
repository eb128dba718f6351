"""Provider presence through a real Redis: registries of two (or three) replicas on one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from inference_club.cluster.presence import Presence
from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.tunnel_directory import TunnelDirectory
from inference_club.domain.providers import ProviderState, parse_heartbeat
from inference_club.errors import SharedStateUnavailable
from inference_club.services.accounts import Accounts
from inference_club.services.auth import Principal
from inference_club.services.registry import ProviderRegistry
from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from inference_club.testing.tcp_proxy import TcpProxy
from tests.conftest import make_settings
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB, fresh_redis_url

DB = TEST_DB


@pytest.fixture
async def redis_url() -> str:
    return await fresh_redis_url(DB)


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    database = Database(make_settings(tmp_path))
    await migrate(database)
    await database.dispose()
    return tmp_path


@asynccontextmanager
async def replica(data_dir: Path, url: str, name: str, **options: float) -> AsyncIterator[Presence]:
    settings = make_settings(data_dir)
    database = Database(settings)
    registry = ProviderRegistry(database, settings)
    link = RedisLink(url)
    presence = Presence(link, registry, replica_id=name, online_window_s=60, **options)
    await presence.start()
    try:
        yield presence
    finally:
        await presence.stop()
        await link.aclose()
        await database.dispose()


def registry_of(presence: Presence) -> ProviderRegistry:
    return presence._registry


async def alice(data_dir: Path) -> Principal:
    database = Database(make_settings(data_dir))
    try:
        user = await Accounts(database).create_user("alice")
    finally:
        await database.dispose()
    return Principal(
        user_id=user.id, username="alice", key_id="key_1", is_admin=False, routing_preference="own"
    )


def heartbeat(name: str, transport: str, max_concurrency: int = 3) -> object:
    return parse_heartbeat(
        {
            "name": name,
            "transport": transport,
            "version": "9.9",
            "callback_url": "http://127.0.0.1:9/" if transport == "direct" else None,
            "services": [{"type": "llm", "max_concurrency": max_concurrency, "models": [{"id": "m1"}]}],
        }
    )


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def online_names(presence: Presence) -> set[str]:
    return {p.name for p in registry_of(presence).online()}


async def test_a_heartbeat_on_one_replica_reaches_the_others_snapshot(data_dir: Path, redis_url: str) -> None:
    principal = await alice(data_dir)
    async with replica(data_dir, redis_url, "r1") as r1, replica(data_dir, redis_url, "r2") as r2:
        state = await registry_of(r1).heartbeat(principal, heartbeat("rig", "direct"))  # type: ignore[arg-type]
        await until(lambda: "rig" in online_names(r2))
        seen = registry_of(r2).get(state.id)
        assert seen is not None
        assert (seen.user_id, seen.transport, seen.version, seen.callback_url) == (
            principal.user_id,
            "direct",
            "9.9",
            state.callback_url,
        )
        assert [(s.max_concurrency, list(s.models)) for s in seen.services] == [(3, ["m1"])]
        assert seen.agent_secret == state.agent_secret  # read from the database, not Redis
        # A later heartbeat changes the service list on the other replica too.
        await registry_of(r1).heartbeat(principal, heartbeat("rig", "direct", max_concurrency=7))  # type: ignore[arg-type]
        await until(lambda: [s.max_concurrency for s in seen.services] == [7])
        # So does a change of visibility made on the dashboard of the first.
        await registry_of(r1).set_visibility(state.id, "shared")
        await until(lambda: seen.visibility == "shared")


async def test_a_dead_replicas_tunnels_expire_from_the_others(data_dir: Path, redis_url: str) -> None:
    principal = await alice(data_dir)
    async with AsyncExitStack() as exits:
        r2 = await exits.enter_async_context(
            replica(data_dir, redis_url, "r2", refresh_s=0.2, tunnel_ttl_s=1.0)
        )
        link = RedisLink(redis_url)
        exits.push_async_callback(link.aclose)
        settings = make_settings(data_dir)
        database = Database(settings)
        exits.push_async_callback(database.dispose)
        registry = ProviderRegistry(database, settings)
        doomed = Presence(
            link, registry, replica_id="r1", online_window_s=60, refresh_s=0.2, tunnel_ttl_s=1.0
        )
        await doomed.start()
        state = await registry.heartbeat(principal, heartbeat("tunnelled", "tunnel"))  # type: ignore[arg-type]
        state.tunnels = 1  # an agent's tunnel attached on r1
        await until(lambda: "tunnelled" in online_names(r2))
        assert registry_of(r2).get(state.id).remote_tunnels == {"r1": 1}  # type: ignore[union-attr]
        # r1 dies: its loops stop without withdrawing anything.
        assert doomed._task is not None
        doomed._task.cancel()
        await doomed._subscription.stop()
        await until(lambda: "tunnelled" not in online_names(r2))
        assert registry_of(r2).get(state.id).remote_tunnels == {}  # type: ignore[union-attr]


async def test_closing_a_tunnel_withdraws_it_at_once(data_dir: Path, redis_url: str) -> None:
    principal = await alice(data_dir)
    async with (
        replica(data_dir, redis_url, "r1", tunnel_ttl_s=60) as r1,
        replica(data_dir, redis_url, "r2", tunnel_ttl_s=60) as r2,
    ):
        state = await registry_of(r1).heartbeat(principal, heartbeat("tunnelled", "tunnel"))  # type: ignore[arg-type]
        state.tunnels = 2
        await until(lambda: getattr(registry_of(r2).get(state.id), "remote_tunnels", None) == {"r1": 2})
        state.tunnels = 0
        await until(lambda: "tunnelled" not in online_names(r2))  # long before the 60 s TTL


async def test_records_are_rewritten_after_redis_comes_back_empty(data_dir: Path, redis_url: str) -> None:
    principal = await alice(data_dir)
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        proxied = f"redis://{proxy.address}/{DB}"
        async with replica(data_dir, proxied, "r1") as r1:
            state = await registry_of(r1).heartbeat(principal, heartbeat("rig", "direct"))  # type: ignore[arg-type]
            await proxy.set_mode("refuse")
            await fresh_redis_url(DB)  # Redis restarted without its data
            await asyncio.sleep(1.5)  # r1 notices the outage
            await proxy.set_mode("pass")
            # A replica started afterwards learns of the provider from r1's rewritten record.
            async with replica(data_dir, redis_url, "r3") as r3:
                await until(lambda: "rig" in online_names(r3))
                assert registry_of(r3).get(state.id) is not None


def directory_for(link: RedisLink, name: str, held: Callable[[], list[str]]) -> TunnelDirectory:
    return TunnelDirectory(link, replica_id=name, internal_url=f"http://{name}.internal:8000", held=held)


async def test_a_tunnel_record_is_written_only_after_the_directory_claim(
    data_dir: Path, redis_url: str
) -> None:
    principal = await alice(data_dir)
    settings = make_settings(data_dir)
    async with AsyncExitStack() as exits, TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        database = Database(settings)
        exits.push_async_callback(database.dispose)
        registry = ProviderRegistry(database, settings)
        link, claims_link = RedisLink(redis_url), RedisLink(f"redis://{proxy.address}/{DB}")
        exits.push_async_callback(link.aclose)
        exits.push_async_callback(claims_link.aclose)
        presence = Presence(link, registry, replica_id="r1", online_window_s=60)  # driven by hand
        state = await registry.heartbeat(principal, heartbeat("tunnelled", "tunnel"))  # type: ignore[arg-type]
        state.tunnels = 1
        directory = directory_for(claims_link, "r1", lambda: [state.id])
        presence.claim_tunnels = directory.claim_all
        watcher = directory_for(link, "watcher", lambda: [])
        record = f"ic:presence:{state.id}:r1"

        await proxy.set_mode("refuse")  # the claim cannot be written
        with pytest.raises(SharedStateUnavailable):
            await presence.publish_changes()
        assert not await link.client.exists(record)  # so the tunnel is not announced either
        await proxy.set_mode("pass")
        await presence.publish_changes()
        assert await link.client.exists(record)
        assert [h.replica_id for h in await watcher.holders(state.id)] == ["r1"]


async def test_after_redis_loses_its_data_claims_and_records_come_back_and_no_tunnel_blinks(
    data_dir: Path, redis_url: str
) -> None:
    principal = await alice(data_dir)
    async with AsyncExitStack() as exits:
        # r1 renews slowly, r2 reads often: r2 looks at the emptied Redis long before r1 rewrites.
        r1 = await exits.enter_async_context(replica(data_dir, redis_url, "r1", refresh_s=0.4))
        r2 = await exits.enter_async_context(replica(data_dir, redis_url, "r2", refresh_s=0.02))
        state = await registry_of(r1).heartbeat(principal, heartbeat("tunnelled", "tunnel"))  # type: ignore[arg-type]
        state.tunnels = 1
        directory = directory_for(r1._link, "r1", lambda: [state.id])
        r1.claim_tunnels = directory.claim_all
        watcher = directory_for(r2._link, "watcher", lambda: [])
        await until(lambda: "tunnelled" in online_names(r2))
        assert [h.replica_id for h in await watcher.holders(state.id)] == ["r1"]
        seen = registry_of(r2).get(state.id)
        assert seen is not None
        blinks: list[ProviderState] = []

        def note_blink(changed: ProviderState) -> None:
            if changed.id == state.id and not changed.remote_tunnels:
                blinks.append(changed)

        registry_of(r2).on_change(note_blink)

        await r2._link.client.flushdb()  # Redis restarted without its data
        record = f"ic:presence:{state.id}:r1"
        deadline = time.monotonic() + 10
        while not await r2._link.client.exists(record):
            assert time.monotonic() < deadline, "r1 did not write its tunnel record again"
            await asyncio.sleep(0.02)
        # Written after the claim: the directory lists r1 again by the time the record is back.
        assert [h.replica_id for h in await watcher.holders(state.id)] == ["r1"]
        assert seen.remote_tunnels == {"r1": 1} and not blinks  # r2 never dropped the tunnel meanwhile
