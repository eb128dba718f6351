"""What the replicas share: capacity slots, rate limits, revocations, job events, files."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import orjson
import pytest

from inference_club.testing.cluster import LIMITED_CONCURRENCY, LIMITED_MODEL, Cluster
from tests.scaleout.conftest import (
    RATE_LIMIT_RPM,
    engine_stats,
    fresh_key,
    http_client,
    reset_engine,
    running_replicas,
)

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e, pytest.mark.slow]

CHAT = [{"role": "user", "content": "count me"}]


async def test_200_concurrent_chats_never_exceed_the_services_max_concurrency(cluster: Cluster) -> None:
    await reset_engine(cluster)
    keys = [await fresh_key(cluster) for _ in range(4)]  # 50 each: under the per-key rate limit
    body = {"model": LIMITED_MODEL, "messages": CHAT, "fake_fault": "latency=0.05"}
    clients = [http_client(cluster.url, k, timeout=120) for k in keys]
    try:
        answers = await asyncio.gather(
            *[clients[i % 4].post("/v1/chat/completions", json=body) for i in range(200)]
        )
    finally:
        for client in clients:
            await client.aclose()
    statuses = [a.status_code for a in answers]
    refused = [a.text for a in answers if a.status_code != 200][:3]
    assert statuses.count(200) == 200, ({s: statuses.count(s) for s in set(statuses)}, refused)
    model = (await engine_stats(cluster))["models"][LIMITED_MODEL]  # type: ignore[index]
    assert model["requests"] == 200
    assert 1 <= model["max_in_flight"] <= LIMITED_CONCURRENCY  # never passed, across 3 replicas


async def test_a_key_gets_its_rate_limit_across_all_replicas(cluster: Cluster) -> None:
    key = await fresh_key(cluster, "limited")
    async with http_client(cluster.url, key) as http:
        started = time.monotonic()
        answers = await asyncio.gather(
            *[http.post("/v1/embeddings", json={"model": "fake-embed", "input": f"n{i}"}) for i in range(500)]
        )
        elapsed = time.monotonic() - started
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(limited) == 500, [a.text for a in answers if a.status_code not in (200, 429)][:3]
    # One minute's budget across the three replicas; should firing take over a minute on a
    # loaded machine, each further minute window admits another.
    windows = max(1, math.ceil(elapsed / 60))
    assert RATE_LIMIT_RPM - 2 <= len(ok) <= windows * RATE_LIMIT_RPM + 2, (len(ok), elapsed)
    assert all(float(a.headers["retry-after"]) > 0 for a in limited)
    assert all(a.json()["error"]["type"] == "rate_limited" for a in limited)


async def test_a_revoked_key_fails_on_every_replica_within_a_second(cluster: Cluster) -> None:
    key_id, key = await cluster.new_key("to-revoke")
    _, manager = await cluster.new_key("manager")
    replicas = running_replicas(cluster)
    for replica in replicas:  # every replica has verified (and cached) the key
        async with http_client(replica.url, key) as http:
            assert (await http.get("/v1/models")).status_code == 200
    async with http_client(cluster.url, manager) as http:
        assert (await http.delete(f"/v1/keys/{key_id}")).status_code == 200
    await asyncio.sleep(1.0)  # the promise: refused everywhere one second after the revocation
    for replica in replicas:
        async with http_client(replica.url, key) as http:
            answer = await http.get("/v1/models")
        assert answer.status_code == 401, (replica.replica_id, answer.status_code)


async def test_a_job_waited_for_and_streamed_on_other_replicas(cluster: Cluster, key: str) -> None:
    first, *others = running_replicas(cluster)
    body = {"model": "fake-chat", "messages": CHAT, "async": True, "fake_fault": "latency=1.0"}
    async with http_client(first.url, key) as submit:
        answer = await submit.post("/v1/chat/completions", json=body)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    async def wait_on(url: str) -> dict[str, Any]:
        async with http_client(url, key) as http:
            done: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 30})).json()
            return done

    async def events_on(url: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with http_client(url, key) as http, http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(orjson.loads(line[6:]))
        return events

    # One replica runs the job; of the two others at least one is not that one.
    async with asyncio.timeout(40):
        results = await asyncio.gather(*[wait_on(r.url) for r in others], *[events_on(r.url) for r in others])
    waited, streamed = results[: len(others)], results[len(others) :]
    for done in waited:
        assert done["status"] == "PROCESSED" and done["result"]["choices"], done
    for events in streamed:
        assert events and events[-1]["status"] == "PROCESSED", events


async def test_a_file_uploaded_via_one_replica_is_read_via_another(cluster: Cluster, key: str) -> None:
    first, second, *_ = running_replicas(cluster)
    payload = b"shared by every replica " * 10_000
    async with http_client(first.url, key) as http:
        uploaded = await http.post("/v1/files", files={"file": ("shared.txt", payload, "text/plain")})
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    assert f"files/{file_id}" in cluster.s3.object_keys(cluster.bucket)
    async with http_client(second.url, key) as http:
        content = await http.get(f"/v1/files/{file_id}/content")
        assert content.status_code == 200 and content.content == payload
        shared = (await http.post(f"/v1/files/{file_id}/share")).json()["url"]
    async with httpx.AsyncClient(timeout=30) as browser:  # a signed link made on one replica, read anywhere
        assert (await browser.get(shared)).content == payload
