"""One scaled-out cluster for the whole suite: 3 replicas behind nginx, 2 agents, PostgreSQL,
Redis, S3 (see inference_club/testing/cluster.py). Tests share it and leave it whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import openai
import pytest

from inference_club.testing.cluster import Cluster, ClusterUnavailable, Replica, running_cluster
from tests.conftest import skip_or_fail

RATE_LIMIT_RPM = 120

# The cluster's hubs: quick leases and heartbeats, so recovery after a kill takes seconds.
HUB_ENV = {
    "IC_RATE_LIMIT_RPM": str(RATE_LIMIT_RPM),
    "IC_QUEUE_TIMEOUT_S": "60",
    "IC_KEY_CACHE_TTL_S": "5",
    "IC_JOB_LEASE_S": "5",
    "IC_JOB_POLL_INTERVAL_S": "0.5",
    "IC_JOB_RETRY_BASE_S": "0.2",
    "IC_JOB_RETRY_MAX_S": "1",
    "IC_JOB_MAX_ATTEMPTS": "5",
    "IC_HEARTBEAT_INTERVAL_S": "2",
    "IC_ONLINE_WINDOW_S": "10",
    "IC_UPSTREAM_TIMEOUT_S": "30",
    "IC_USAGE_FLUSH_INTERVAL_S": "0.5",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that kill a replica or stop Redis run after the others: they restore the
    shared cluster afterwards, but the engine's counters and the capacity slots of a
    cluster that just lost a replica take a few seconds to settle."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/scaleout/test_failures.py"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    try:
        with running_cluster(tmp, replicas=3, agents=2, hub_env=HUB_ENV) as running:
            yield running
    except ClusterUnavailable as exc:
        skip_or_fail(str(exc))


@pytest.fixture
async def key(cluster: Cluster) -> str:
    """A fresh key per test: each has its own rate limit bucket."""
    return await fresh_key(cluster)


async def fresh_key(cluster: Cluster, name: str = "scaleout") -> str:
    """A new key, already verified by every running replica: a burst of requests with a key no
    replica has seen would spend its time hashing the same key hundreds of times."""
    raw = (await cluster.new_key(name))[1]
    for replica in running_replicas(cluster):
        async with http_client(replica.url, raw) as http:
            assert (await http.get("/v1/models")).status_code == 200
    return raw


def http_client(base_url: str, key: str, timeout: float = 60.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=300, max_keepalive_connections=300),
    )


def sdk(cluster: Cluster, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{cluster.url}/v1", api_key=key, max_retries=0, timeout=60)


def running_replicas(cluster: Cluster) -> list[Replica]:
    return [r for r in cluster.replicas if r.is_running()]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, cluster: Cluster
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s\n{cluster.logs()}")
        await asyncio.sleep(0.2)


async def engine_stats(cluster: Cluster) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=10) as http:
        stats: dict[str, object] = (await http.get(f"{cluster.engine_url}/_stats")).json()
        return stats


async def reset_engine(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        await http.post(f"{cluster.engine_url}/_reset")


@pytest.fixture
async def whole(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster, restored after the test: every replica running and serving the agents' models."""
    yield cluster
    for replica in cluster.replicas:
        if not replica.is_running():
            cluster.restart_replica(replica)
    if not cluster.redis.ping():
        cluster.redis.start()
    await asyncio.to_thread(cluster.wait_until_served, ["fake-chat", "fake-limited"], 60.0)
