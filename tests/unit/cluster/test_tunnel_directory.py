"""The tunnel directory on a real Redis: claims, releases, expiry, several holders."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.tunnel_directory import Holder, TunnelDirectory, replica_url_key, tunnels_key
from tests.conftest import skip_or_fail

REDIS_URL = os.environ.get("IC_TEST_REDIS_RELAY_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    raw = aioredis.Redis.from_url(REDIS_URL)
    try:
        await raw.ping()
    except Exception as exc:
        await raw.aclose()
        skip_or_fail(f"Redis at {REDIS_URL} is not reachable: {exc!r}")
    await raw.flushdb()
    link = RedisLink(REDIS_URL)
    yield link
    await link.aclose()
    await raw.flushdb()
    await raw.aclose()


def replica(link: RedisLink, name: str, held: set[str] | None = None, ttl_s: float = 15.0) -> TunnelDirectory:
    source = held if held is not None else set()
    return TunnelDirectory(
        link,
        replica_id=name,
        internal_url=f"http://{name}.internal:8000",
        held=lambda: sorted(source),
        ttl_s=ttl_s,
    )


async def test_a_claim_is_seen_by_the_other_replicas_but_not_by_its_own(link: RedisLink) -> None:
    a, b = replica(link, "a"), replica(link, "b")
    await a.advertise()
    a.holding("prov_1", True)
    await a.settled()
    assert await b.holders("prov_1") == [Holder("a", "http://a.internal:8000")]
    assert await a.holders("prov_1") == []  # a replica never relays to itself
    assert await b.holders("prov_other") == []
    a.holding("prov_1", False)
    await a.settled()
    assert await b.holders("prov_1") == []


async def test_several_replicas_may_hold_one_provider(link: RedisLink) -> None:
    a, b, c = replica(link, "a"), replica(link, "b"), replica(link, "c")
    for directory in (a, b):
        await directory.advertise()
        directory.holding("prov_1", True)
        await directory.settled()
    assert sorted(h.replica_id for h in await c.holders("prov_1")) == ["a", "b"]
    await a.stop()
    assert [h.replica_id for h in await c.holders("prov_1")] == ["b"]
    raw = link.client
    assert await raw.get(replica_url_key("a")) is None


async def test_a_holder_without_an_address_is_not_offered(link: RedisLink) -> None:
    a, b = replica(link, "a"), replica(link, "b")
    await a.claim(["prov_1"])  # claimed, but its URL was never advertised (or expired)
    assert await b.holders("prov_1") == []


async def test_claims_of_a_dead_replica_expire_and_a_live_one_refreshes_them(link: RedisLink) -> None:
    held = {"prov_1"}
    live = replica(link, "live", held, ttl_s=0.6)
    dead = replica(link, "dead", {"prov_1"}, ttl_s=0.6)
    watcher = replica(link, "watcher")
    await dead.refresh()  # claims once, then "dies" (never refreshes)
    live.start()
    try:
        deadline = time.monotonic() + 10
        while {h.replica_id for h in await watcher.holders("prov_1")} != {"live"}:
            assert time.monotonic() < deadline, "the dead replica's claim did not expire"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # several TTLs: the live claim is refreshed, not lost
        assert [h.replica_id for h in await watcher.holders("prov_1")] == ["live"]
        assert 0 < await link.client.pttl(tunnels_key("prov_1")) <= 600
    finally:
        await live.stop()
    assert await watcher.holders("prov_1") == []


async def test_a_release_does_not_overtake_the_claim_before_it(link: RedisLink) -> None:
    a, b = replica(link, "a"), replica(link, "b")
    await a.advertise()
    for _ in range(20):
        a.holding("prov_1", True)
        a.holding("prov_1", False)
    a.holding("prov_1", True)
    await a.settled()
    assert [h.replica_id for h in await b.holders("prov_1")] == ["a"]
