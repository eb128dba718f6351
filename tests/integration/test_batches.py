"""Batches: 256 mixed jobs over two providers within their capacity, synchronous calls
first, counts, cancel, idempotency and all-or-nothing validation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.settings import Settings
from inference_club.testing.fake_engine import FakeEngineState
from tests.conftest import RunningHub, make_settings
from tests.integration.conftest import engine_server, run_agent, services_for

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello batch"}]
TYPES = ["llm", "embedding", "image", "tts"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "data",
        job_poll_interval_s=0.2,
        job_retry_base_s=0.05,
        job_retry_max_s=0.2,
        queue_timeout_s=10.0,
    )


@asynccontextmanager
async def two_providers(hub: RunningHub, key: str) -> AsyncIterator[list[FakeEngineState]]:
    async with AsyncExitStack() as exits:
        engines = []
        for name in ("rig-a", "rig-b"):
            state, url = await exits.enter_async_context(engine_server())
            await exits.enter_async_context(
                run_agent(hub.base_url, key, name, services_for(url, max_concurrency=2, types=TYPES))
            )
            engines.append(state)
        yield engines


def item(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"endpoint": endpoint, "body": body}


async def batch_done(http: httpx.AsyncClient, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = (await http.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] == "DONE":
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(batch)
        await asyncio.sleep(0.1)


async def test_256_mixed_jobs_over_two_providers(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=0.15"}),
        ("/v1/embeddings", {"model": "fake-embed", "input": "x", "fake_fault": "latency=0.05"}),
        ("images/generations", {"model": "fake-image", "prompt": "fox", "fake_fault": "latency=0.05"}),
        (
            "audio.speech",
            {"model": "fake-tts", "input": "hi", "voice": "alloy", "fake_fault": "latency=0.05"},
        ),
    ]
    requests = [item(*kinds[i % 4]) for i in range(256)]
    async with (
        two_providers(hub, key) as engines,
        httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http,
    ):
        created = await http.post("/v1/batches", json={"label": "mixed", "requests": requests})
        assert created.status_code == 202, created.text
        batch = created.json()
        assert batch["object"] == "batch" and batch["label"] == "mixed" and batch["total"] == 256
        assert batch["status"] == "PENDING" and batch["queued"] == 256 and batch["processed"] == 0
        assert set(batch) >= {
            "id",
            "label",
            "status",
            "total",
            "queued",
            "processing",
            "processed",
            "failed",
            "canceled",
            "created",
        }

        # While the queue is long, a synchronous request gets the next free slot.
        await asyncio.sleep(0.5)
        started = time.monotonic()
        answer = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        sync_s = time.monotonic() - started
        assert answer.status_code == 200
        during = (await http.get(f"/v1/batches/{batch['id']}")).json()
        queued_chat = [j for j in during["jobs"] if j["inference_type"] == "llm" and j["status"] == "QUEUED"]
        assert sync_s < 1.0, sync_s
        assert len(queued_chat) > 8, "the synchronous request should not have waited for the queue"

        done = await batch_done(http, batch["id"])
        assert done["processed"] == 256 and done["queued"] == done["processing"] == done["failed"] == 0
        assert len(done["jobs"]) == 256 and {j["status"] for j in done["jobs"]} == {"PROCESSED"}
        assert {j["inference_type"] for j in done["jobs"]} == {"llm", "embedding", "image", "tts"}
        listed = (await http.get("/v1/batches")).json()
        assert listed["data"][0]["id"] == batch["id"] and listed["data"][0]["status"] == "DONE"
        jobs = (await http.get("/v1/jobs", params={"batch_id": batch["id"], "limit": 200})).json()
        assert len(jobs["data"]) == 200 and jobs["has_more"]

    for engine in engines:
        for model in ("fake-chat", "fake-embed", "fake-image", "fake-tts"):
            assert engine.stats.model(model).max_in_flight <= 2, (model, engine.stats.models)
        assert engine.stats.requests["/v1/chat/completions"] > 0
    served = {
        path: sum(e.stats.requests[path] for e in engines)
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations", "/v1/audio/speech")
    }
    assert served == {
        "/v1/chat/completions": 65,
        "/v1/embeddings": 64,
        "/v1/images/generations": 64,
        "/v1/audio/speech": 64,
    }


async def test_cancel_a_batch_and_idempotency(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    body = {
        "label": "slow",
        "requests": [
            item("/v1/embeddings", {"model": "fake-embed", "input": str(i), "fake_fault": "latency=5"})
            for i in range(10)
        ],
    }
    async with (
        two_providers(hub, key) as engines,
        httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http,
    ):
        first = await http.post("/v1/batches", json=body, headers={"Idempotency-Key": "b-1"})
        assert first.status_code == 202
        again = await http.post("/v1/batches", json=body, headers={"Idempotency-Key": "b-1"})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        changed = await http.post(
            "/v1/batches", json={**body, "label": "other"}, headers={"Idempotency-Key": "b-1"}
        )
        assert changed.status_code == 409 and changed.json()["error"]["type"] == "conflict"

        batch_id = first.json()["id"]
        deadline = time.monotonic() + 10
        while sum(e.stats.in_flight for e in engines) < 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        running = (await http.get(f"/v1/batches/{batch_id}")).json()
        assert running["status"] == "PROCESSING" and running["processing"] == 4 and running["queued"] == 6
        canceled = await http.post(f"/v1/batches/{batch_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["canceled"] == 10 and canceled.json()["status"] == "DONE"
        deadline = time.monotonic() + 5
        while sum(e.stats.aborted for e in engines) < 4:
            assert time.monotonic() < deadline, [e.stats for e in engines]
            await asyncio.sleep(0.05)
        assert sum(e.stats.requests["/v1/embeddings"] for e in engines) == 4
        assert (await http.post(f"/v1/batches/{batch_id}/cancel")).status_code == 409
        # A canceled job of a batch can be retried; the batch counts follow.
        job_id = canceled.json()["id"] and (await http.get(f"/v1/batches/{batch_id}")).json()["jobs"][0]["id"]
        assert (await http.post(f"/v1/jobs/{job_id}/retry")).status_code == 202
        assert (await http.get(f"/v1/batches/{batch_id}")).json()["canceled"] == 9
        await http.post(f"/v1/jobs/{job_id}/cancel")


async def test_bad_batches_create_nothing(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    chat = item("/v1/chat/completions", {"model": "fake-chat", "messages": CHAT})
    async with (
        two_providers(hub, key),
        httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http,
    ):

        async def post(body: Any) -> httpx.Response:
            return await http.post("/v1/batches", json=body)

        malformed = await post(
            {"requests": [chat, chat, item("/v1/chat/completions", {"model": "fake-chat"})]}
        )
        assert malformed.status_code == 400
        error = malformed.json()["error"]
        assert error["type"] == "invalid_request" and error["param"] == "requests[2].body.messages"
        assert "requests[2]" in error["message"]

        unknown = await post({"requests": [chat, {"endpoint": "/v1/nope", "body": {}}]})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "requests[1].endpoint"
        upload = await post({"requests": [{"endpoint": "/v1/audio/transcriptions", "body": {"model": "w"}}]})
        assert upload.status_code == 400 and upload.json()["error"]["param"] == "requests[0].endpoint"

        too_many = await post({"requests": [chat] * 257})
        assert too_many.status_code == 400 and too_many.json()["error"]["type"] == "too_large"
        empty = await post({"requests": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "requests"

        no_provider = await post(
            {"requests": [chat, item("/v1/chat/completions", {"model": "nope", "messages": CHAT})]}
        )
        assert no_provider.status_code == 404 and no_provider.json()["error"]["type"] == "no_provider"
        assert no_provider.json()["error"]["param"] == "requests[1].body.model"

        for body, param in (
            ({"requests": "all of them"}, "requests"),
            ({}, "requests"),
            ({"requests": [chat], "label": 7}, "label"),
            ({"requests": [["not", "an", "object"]]}, "requests[0]"),
            ({"requests": [{"endpoint": 3, "body": {}}]}, "requests[0].endpoint"),
            ({"requests": [{"endpoint": "/v1/embeddings", "body": "x"}]}, "requests[0].body"),
            ({"requests": [item("/v1/embeddings", {"model": 3, "input": "x"})]}, "requests[0].body.model"),
        ):
            answer = await post(body)
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"]["param"] == param, (body, answer.json())
        not_json = await http.post(
            "/v1/batches", content=b"[1,", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and "detail" in not_json.json()
        assert (await post([chat])).status_code == 400

        assert (await http.get("/v1/batches")).json()["data"] == []
        assert (await http.get("/v1/jobs")).json()["data"] == []
        assert (await http.get("/v1/batches/batch_nope")).status_code == 404

        ok = await post({"requests": [chat]})
        assert ok.status_code == 202
        bob = await hub.new_user("bob")
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {bob}"}
        ) as other:
            assert (await other.get(f"/v1/batches/{ok.json()['id']}")).status_code == 404
            assert (await other.post(f"/v1/batches/{ok.json()['id']}/cancel")).status_code == 404
            assert (await other.get("/v1/batches")).json()["data"] == []
        await batch_done(http, ok.json()["id"])


JUNK: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b'{"requests": null, "label": null}', "application/json"),
    (b'{"requests": [null, 1, "x", {"endpoint": null, "body": null}]}', "application/json"),
    (b'{"requests": [{"endpoint": "\\u0000", "body": {"model": "\\u0000"}}]}', "application/json"),
    (
        b'{"requests": [{"endpoint": "/v1/chat/completions", "body": {"model": "m", "messages": [[[]]]}}]}',
        "application/json",
    ),
    (b"model=m", "application/x-www-form-urlencoded"),
    (b"\x00\x01\x02", "application/octet-stream"),
]


async def test_no_500_for_junk_on_job_and_batch_routes(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    failures = []
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for raw, content_type in JUNK:
            answer = await http.post("/v1/batches", content=raw, headers={"content-type": content_type})
            if not 400 <= answer.status_code < 500:
                failures.append(("/v1/batches", raw, answer.status_code, answer.text[:200]))
        for path in (
            "/v1/jobs?limit=0",
            "/v1/jobs?limit=x",
            "/v1/jobs?status=%00",
            "/v1/jobs?active=maybe",
            "/v1/jobs/%00",
            "/v1/jobs/" + "x" * 5000,
            "/v1/jobs/job_x?wait=-1",
            "/v1/jobs/job_x?wait=x",
            "/v1/jobs/job_x/events",
            "/v1/jobs/summary?scope=all",
            "/v1/batches?limit=500",
            "/v1/batches/%ff",
        ):
            answer = await http.get(path)
            if not 400 <= answer.status_code < 500:
                failures.append((path, b"GET", answer.status_code, answer.text[:200]))
        for path in ("/v1/jobs/job_x/cancel", "/v1/jobs/job_x/retry", "/v1/batches/batch_x/cancel"):
            answer = await http.post(path)
            if answer.status_code != 404:
                failures.append((path, b"POST", answer.status_code, answer.text[:200]))
        assert (await http.get("/v1/jobs")).json()["data"] == []
        assert (await http.get("/v1/batches")).json()["data"] == []
    async with httpx.AsyncClient(base_url=hub.base_url) as anonymous:
        for path in ("/v1/jobs", "/v1/jobs/summary", "/v1/jobs/job_x", "/v1/batches"):
            if (await anonymous.get(path)).status_code != 401:
                failures.append((path, b"no key", 0, ""))
    assert not failures
