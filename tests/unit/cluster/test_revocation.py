"""Key revocations and user changes fanned out between replicas over a real Redis.

Each replica here is what a hub holds for this: its own key cache, provider registry, key
watch and broadcast, on one shared SQLite database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from inference_club.cluster.broadcast import Broadcast
from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.revocation import CHANNEL, RevocationFanout, announce
from inference_club.domain.providers import parse_heartbeat
from inference_club.errors import AuthError
from inference_club.services.accounts import Accounts
from inference_club.services.auth import KeyAuthenticator, Principal
from inference_club.services.registry import ProviderRegistry
from inference_club.services.revocation import KeyWatch
from inference_club.store.db import Database
from inference_club.testing.servers import free_port
from inference_club.testing.tcp_proxy import TcpProxy
from tests.conftest import make_settings
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB


@dataclass
class Replica:
    database: Database
    auth: KeyAuthenticator
    registry: ProviderRegistry
    key_watch: KeyWatch
    broadcast: Broadcast

    def online(self) -> set[str]:
        return {p.name for p in self.registry.online()}

    async def start(self) -> None:
        await self.broadcast.start()
        async with asyncio.timeout(10):
            await self.broadcast.connected.wait()


@dataclass
class World:
    data_dir: Path
    redis_url: str
    user_id: str
    key_id: str
    raw_key: str

    @asynccontextmanager
    async def replica(self, *, start: bool = True, redis_url: str | None = None) -> AsyncIterator[Replica]:
        settings = make_settings(self.data_dir)
        database = Database(settings)
        registry = ProviderRegistry(database, settings)
        auth = KeyAuthenticator(database, ttl_s=3600)  # only a revocation empties it in time
        key_watch = KeyWatch(auth, registry, None, interval_s=3600)
        link = RedisLink(redis_url or self.redis_url, timeout_s=0.5)
        broadcast = Broadcast(link)
        RevocationFanout(broadcast, key_watch)
        replica = Replica(database, auth, registry, key_watch, broadcast)
        try:
            if start:
                await replica.start()
            yield replica
        finally:
            await key_watch.stop()
            await broadcast.stop()
            await link.aclose()
            await database.dispose()

    async def serve_provider(self, replica: Replica, name: str = "rig") -> Principal:
        """A direct provider heartbeating to ``replica`` with the key (which fills its key cache)."""
        principal = await replica.auth.authenticate(f"Bearer {self.raw_key}")
        body = parse_heartbeat(
            {
                "name": name,
                "transport": "direct",
                "version": "1",
                "callback_url": "http://127.0.0.1:9/",
                "services": [{"type": "llm", "max_concurrency": 1, "models": [{"id": "m1"}]}],
            }
        )
        await replica.registry.heartbeat(principal, body)
        assert name in replica.online()
        return principal


@pytest.fixture
async def world(data_dir: Path, redis_url: str) -> World:
    database = Database(make_settings(data_dir))
    try:
        accounts = Accounts(database)
        user = await accounts.create_user("alice")
        created = await accounts.create_key("alice")
    finally:
        await database.dispose()
    return World(data_dir, redis_url, user.id, created.key.id, created.raw)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"not within 10 s: {what}"
        await asyncio.sleep(0.02)


async def revoke_in_database(world: World, replica: Replica) -> None:
    await Accounts(replica.database).revoke_key(world.key_id)


async def test_a_key_revoked_on_one_replica_is_cut_off_on_the_other(world: World) -> None:
    async with world.replica() as a, world.replica() as b:
        await world.serve_provider(b)
        await revoke_in_database(world, a)
        a.key_watch.key_revoked(world.key_id)
        await until(lambda: "rig" not in b.online(), "the provider taken offline on the other replica")
        # Its cached key went too: the next use reads the database, which says revoked.
        with pytest.raises(AuthError):
            await b.auth.authenticate(f"Bearer {world.raw_key}")


async def test_a_user_disabled_on_one_replica_is_rechecked_on_the_other(world: World) -> None:
    async with world.replica() as a, world.replica() as b:
        await world.serve_provider(b)
        await Accounts(a.database).set_disabled(world.user_id, True)
        a.key_watch.user_changed(world.user_id)
        await until(lambda: "rig" not in b.online(), "the disabled user's provider taken offline")


async def test_the_cli_announces_from_a_process_of_its_own(world: World) -> None:
    async with world.replica() as b:
        await world.serve_provider(b)
        async with world.replica() as a:
            await revoke_in_database(world, a)
        assert await announce(world.redis_url, "key", world.key_id)
        await until(lambda: "rig" not in b.online(), "the provider taken offline")


async def test_the_cli_is_told_when_redis_is_unreachable() -> None:
    assert not await announce(f"redis://127.0.0.1:{free_port()}/0", "key", "key_x")


async def test_messages_that_name_nothing_known_change_nothing(world: World) -> None:
    async with world.replica() as b:
        await world.serve_provider(b)
        link = RedisLink(world.redis_url)
        try:
            async with link.call() as r:
                for body in (
                    {"subject": "key", "id": 5, "origin": "x"},
                    {"subject": "key", "origin": "x"},
                    {"subject": "group", "id": world.key_id, "origin": "x"},
                ):
                    await r.publish(CHANNEL, orjson.dumps(body))
        finally:
            await link.aclose()
        await until(lambda: b.broadcast.received >= 3, "the three messages handled")
        assert "rig" in b.online()
        assert b.key_watch.checks == 0


async def test_each_subscription_rechecks_the_keys_it_may_have_missed(world: World) -> None:
    async with world.replica(start=False) as b:
        await world.serve_provider(b)
        # Revoked while this replica heard nothing (Redis was away, say).
        await revoke_in_database(world, b)
        await b.start()
        await until(lambda: "rig" not in b.online(), "the provider of the missed revocation taken offline")
        assert b.key_watch.checks >= 1


async def test_a_revocation_missed_while_redis_was_away_is_caught_up_when_it_returns(world: World) -> None:
    async with (
        TcpProxy(REDIS_HOST, REDIS_PORT) as proxy,
        world.replica() as a,
        world.replica(redis_url=f"redis://{proxy.address}/{TEST_DB}") as b,
        world.replica() as observer,
    ):
        heard: list[dict[str, object]] = []
        observer.broadcast.on(CHANNEL, heard.append)
        await world.serve_provider(b)
        await proxy.set_mode("refuse")
        await until(lambda: not b.broadcast.connected.is_set(), "b's subscription lost")
        await revoke_in_database(world, a)
        a.key_watch.key_revoked(world.key_id)
        await until(lambda: any(m.get("id") == world.key_id for m in heard), "the revocation published")
        assert "rig" in b.online()  # b could not hear it
        await proxy.set_mode("pass")
        await until(lambda: "rig" not in b.online(), "the missed revocation caught up")


async def test_revoking_while_redis_is_down_still_cuts_the_key_off_here(world: World) -> None:
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        async with world.replica(redis_url=f"redis://{proxy.address}/{TEST_DB}") as a:
            await world.serve_provider(a)
            await proxy.set_mode("refuse")
            await revoke_in_database(world, a)
            a.key_watch.key_revoked(world.key_id)  # the notice is lost, not an error
            assert "rig" not in a.online()
            await until(lambda: a.broadcast.dropped == 1, "the notice dropped")
