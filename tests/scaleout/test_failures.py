"""Failures of the scaled deployment: a replica killed with SIGKILL, Redis stopped for 10 s."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from inference_club.testing.cluster import Cluster
from tests.scaleout.conftest import engine_stats, eventually, fresh_key, http_client, reset_engine

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e, pytest.mark.slow]

AGENT_SLOTS = 2 * 16  # fake-chat: two agents, max_concurrency 16 each


async def all_chat_slots_free(cluster: Cluster) -> bool:
    """Every fake-chat slot can be taken at once: AGENT_SLOTS held requests all reach the engine."""
    await reset_engine(cluster)
    keys = [await fresh_key(cluster) for _ in range(2)]
    body = {
        "model": "fake-chat",
        "messages": [{"role": "user", "content": "slot"}],
        "fake_fault": "latency=4",
    }
    clients = [http_client(cluster.url, k, timeout=60) for k in keys]
    try:
        answers = await asyncio.gather(
            *[clients[i % 2].post("/v1/chat/completions", json=body) for i in range(AGENT_SLOTS)]
        )
    finally:
        for client in clients:
            await client.aclose()
    model = (await engine_stats(cluster))["models"]["fake-chat"]  # type: ignore[index]
    return all(a.status_code == 200 for a in answers) and model["max_in_flight"] == AGENT_SLOTS


async def test_kill_9_of_a_tunnel_holding_replica_during_a_batch(whole: Cluster, key: str) -> None:
    cluster = whole
    await reset_engine(cluster)
    owner = cluster.tunnel_owner()
    assert owner is not None, "no replica advertises an agent's tunnel in Redis"
    requests = [
        {
            "endpoint": "/v1/chat/completions",
            "body": {
                "model": "fake-chat",
                "messages": [{"role": "user", "content": f"job {i}"}],
                "fake_fault": "latency=0.3",
            },
        }
        for i in range(100)
    ]
    async with http_client(cluster.url, key) as http:
        created = await http.post("/v1/batches", json={"label": "kill -9", "requests": requests})
        assert created.status_code == 202, created.text
        batch_id = created.json()["id"]

        async def some_processed() -> bool:
            batch = (await http.get(f"/v1/batches/{batch_id}")).json()
            return bool(batch["processed"] >= 10)

        await eventually(some_processed, 60, "10 jobs of the batch processed", cluster)
        cluster.kill_replica(owner)

        deadline = time.monotonic() + 120
        while True:
            answer = await http.get(f"/v1/batches/{batch_id}")
            if answer.status_code == 200 and answer.json()["status"] == "DONE":
                batch = answer.json()
                break
            assert time.monotonic() < deadline, f"batch not done\n{cluster.logs()}"
            await asyncio.sleep(0.5)
        assert batch["processed"] == 100 and batch["failed"] == 0, batch

        listed = await batch_jobs(http, batch_id)
        assert len(listed) == 100 and len({j["id"] for j in listed}) == 100
        jobs = [(await http.get(f"/v1/jobs/{j['id']}")).json() for j in listed]
    assert all(j["status"] == "PROCESSED" for j in jobs), [j["status"] for j in jobs]
    # Each job holds its own prompt's answer: one row and one result per job, none swapped.
    numbers = sorted(
        int(re.search(r"job (\d+)", j["result"]["choices"][0]["message"]["content"]).group(1))  # type: ignore[union-attr]
        for j in jobs
    )
    assert numbers == list(range(100)), numbers

    await eventually(lambda: all_chat_slots_free(cluster), 60, "every capacity slot free again", cluster)


async def batch_jobs(http: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"batch_id": batch_id, "limit": 100}
        if after:
            params["after"] = after
        page = (await http.get("/v1/jobs", params=params)).json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        after = page["last_id"]


async def test_redis_stopped_for_10_seconds(whole: Cluster) -> None:
    cluster = whole
    keys = [await fresh_key(cluster) for _ in range(3)]  # taken in turn: well under each key's rate limit
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "during the outage"}]}
    outcomes: list[tuple[str, int | str]] = []
    stop = asyncio.Event()

    async def traffic(phase: list[str]) -> None:
        async with http_client(cluster.url, keys[0], timeout=10) as http:
            sent = 0
            while not stop.is_set():
                sent += 1
                try:
                    answer = await http.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {keys[sent % 3]}"},
                    )
                    outcomes.append((phase[0], answer.status_code))
                    if answer.status_code == 503:
                        assert answer.json()["error"]["type"] == "busy" and answer.headers["retry-after"]
                except httpx.TimeoutException:
                    outcomes.append((phase[0], "timeout"))
                await asyncio.sleep(0.2)

    phase = ["before"]
    runner = asyncio.create_task(traffic(phase))
    await asyncio.sleep(1.0)
    cluster.redis.stop()
    phase[0] = "outage"
    await asyncio.sleep(10.0)
    cluster.redis.start()
    phase[0] = "after"
    try:

        async def served() -> bool:
            return any(p == "after" and s == 200 for p, s in outcomes[-3:])

        await eventually(served, 30, "chats served again after Redis came back", cluster)
    finally:
        stop.set()
        await runner
    during = [s for p, s in outcomes if p == "outage"]
    assert during and "timeout" not in during, during  # answered, never hung
    assert set(during) <= {200, 503}, during
    assert 503 in during, during  # what needs Redis said so
    assert all(s == 200 for p, s in outcomes if p == "before"), outcomes


async def test_200_chats_right_after_a_replica_kill_and_a_redis_restart_get_no_502(whole: Cluster) -> None:
    """Presence and the tunnel directory are rewritten together: a replica never routes to a
    tunnel it cannot find (502 "has no open tunnel"); it waits for the moving agent instead."""
    cluster = whole
    keys = [await fresh_key(cluster) for _ in range(4)]  # 50 each: under the per-key rate limit
    owner = cluster.tunnel_owner()
    assert owner is not None, "no replica advertises an agent's tunnel in Redis"
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "right after"}]}
    clients = [http_client(cluster.url, k, timeout=120) for k in keys]
    cluster.kill_replica(owner)
    cluster.redis.stop()
    cluster.redis.start()  # empty: no persistence
    started = time.monotonic()
    try:
        # Ten at a time over the next seven seconds: longer than the directory's own refresh
        # period, so whatever phase it is in, the chats cover the time until it has run.
        answers: list[httpx.Response] = []
        for wave in range(20):
            answers += await asyncio.gather(
                *[clients[(wave + i) % 4].post("/v1/chat/completions", json=body) for i in range(10)]
            )
            await asyncio.sleep(max(0.0, started + 0.35 * (wave + 1) - time.monotonic()))
    finally:
        for client in clients:
            await client.aclose()
    statuses = [a.status_code for a in answers]
    counts = {s: statuses.count(s) for s in set(statuses)}
    failed = [a.text for a in answers if a.status_code != 200][:3]
    assert 502 not in counts, (counts, failed, cluster.logs())
    # Only Redis' own absence may show (503 busy while it restarts); everything else is served.
    assert set(counts) <= {200, 503}, (counts, failed)
    assert all(a.json()["error"]["type"] == "busy" for a in answers if a.status_code == 503), failed
