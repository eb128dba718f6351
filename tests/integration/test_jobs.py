"""Async jobs through hub → agent (direct) → fake engine: results, waiting, events,
cancel, retry, backoff, idempotency, fairness and bad input."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.settings import Settings
from inference_club.store import jobs as jobs_q
from inference_club.store.db import Database
from inference_club.testing.fake_engine import Fault
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import Stack, engine_server, run_agent, services_for

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello queue"}]
ENVELOPE_KEYS = {"id", "object", "status", "inference_type", "endpoint", "model", "created", "queued_at"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "data",
        job_poll_interval_s=0.2,
        job_retry_base_s=0.05,
        job_retry_max_s=0.2,
        job_lease_s=3.0,
        job_queue_timeout_s=2.0,
    )


@asynccontextmanager
async def small_stack(
    hub: RunningHub,
    *,
    max_concurrency: int,
    types: list[str] | None = None,
    user: str = "alice",
    transport: str = "direct",
) -> AsyncIterator[Stack]:
    key = await hub.new_user(user)
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        agent = await exits.enter_async_context(
            run_agent(
                hub.base_url,
                key,
                "rig",
                services_for(url, max_concurrency=max_concurrency, types=types),
                transport=transport,
            )
        )
        yield Stack(hub=hub, key=key, engine=state, engine_url=url, agents=[agent])


async def submit(http: httpx.AsyncClient, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = await http.post(path, json={**body, "async": True}, headers=headers)
    assert answer.status_code == 202, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def wait_job(http: httpx.AsyncClient, job_id: str, wait: float = 20) -> dict[str, Any]:
    answer = await http.get(f"/v1/jobs/{job_id}", params={"wait": wait})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def status_of(http: httpx.AsyncClient, job_id: str) -> str:
    return str((await http.get(f"/v1/jobs/{job_id}")).json()["status"])


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- results


async def test_async_chat_with_the_sdk_raw_response(stack: Stack) -> None:
    raw = await stack.client().chat.completions.with_raw_response.create(
        model="fake-chat", messages=CHAT, extra_body={"async": True}
    )
    assert raw.http_response.status_code == 202
    envelope = raw.http_response.json()
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["object"] == "inference.job" and envelope["status"] == "QUEUED"
    assert envelope["endpoint"] == "/v1/chat/completions" and envelope["inference_type"] == "llm"
    assert raw.http_response.headers["location"] == f"/v1/jobs/{envelope['id']}"
    async with stack.http() as http:
        job = await wait_job(http, envelope["id"])
    assert job["status"] == "PROCESSED", job
    assert "hello queue" in job["result"]["choices"][0]["message"]["content"]
    assert job["attempts"] == 1 and job["max_attempts"] == 3 and job["provider"] == "home-rig"
    assert job["error"] is None and job["started_at"] and job["finished_at"]
    assert job["timings"]["run_s"] is not None
    # "async" is stripped before the body is stored and sent on.
    async with stack.hub.hub.database.read() as session:
        row = await jobs_q.get_job(session, job_id=envelope["id"], user_id=None)
    assert row is not None and "async" not in row.body


async def test_async_jobs_of_every_json_modality(stack: Stack) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/completions", {"model": "fake-chat", "prompt": "once upon"}),
        ("/v1/embeddings", {"model": "fake-embed", "input": ["a", "b"]}),
        ("/v1/images/generations", {"model": "fake-image", "prompt": "a red fox", "n": 2}),
        ("/v1/audio/speech", {"model": "fake-tts", "voice": "alloy", "input": "hello there"}),
        ("/v1/music/generations", {"model": "fake-music", "prompt": "calm piano", "duration": 1}),
        ("/v1/videos/generations", {"model": "fake-video", "prompt": "waves", "duration": 1}),
        ("/v1/3d/generations", {"model": "fake-mesh", "prompt": "a chair"}),
    ]
    async with stack.http() as http:
        queued = [(path, await submit(http, path, body)) for path, body in cases]
        jobs = {path: await wait_job(http, envelope["id"]) for path, envelope in queued}
        for path, job in jobs.items():
            assert job["status"] == "PROCESSED", (path, job)
        assert "once upon" in jobs["/v1/completions"]["result"]["choices"][0]["text"]
        assert len(jobs["/v1/embeddings"]["result"]["data"]) == 2
        assert jobs["/v1/embeddings"]["files"] == [] and jobs["/v1/embeddings"]["result_url"] is None

        images = jobs["/v1/images/generations"]
        assert images["inference_type"] == "image" and len(images["files"]) == 2
        assert images["result_url"] == images["result"]["data"][0]["url"]
        png = await http.get(images["result_url"])
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

        for path, magic, kind in (
            ("/v1/audio/speech", b"RIFF", "audio/"),
            ("/v1/music/generations", b"RIFF", "audio/"),
            ("/v1/videos/generations", None, "video/mp4"),
            ("/v1/3d/generations", b"glTF", "model/gltf-binary"),
        ):
            job = jobs[path]
            assert job["result_url"] and job["files"], (path, job)
            content = await http.get(job["result_url"])
            assert content.status_code == 200, path
            assert content.headers["content-type"].startswith(kind), (path, content.headers)
            if magic:
                assert content.content[:4] == magic, path
            assert job["files"][0]["bytes"] == len(content.content)
            meta = (await http.get(f"/v1/files/{job['files'][0]['id']}")).json()
            assert meta["purpose"] == "output"


async def test_wait_returns_as_soon_as_the_job_ends(stack: Stack) -> None:
    async with stack.http() as http:
        job = await submit(
            http,
            "/v1/chat/completions",
            {"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=0.6"},
        )
        started = time.monotonic()
        done = await wait_job(http, job["id"], wait=30)
        elapsed = time.monotonic() - started
        assert done["status"] == "PROCESSED"
        assert 0.3 < elapsed < 5, elapsed
        # A short wait on a job that does not end returns its current state.
        slow = await submit(
            http, "/v1/chat/completions", {"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=5"}
        )
        started = time.monotonic()
        current = await wait_job(http, slow["id"], wait=0.5)
        assert current["status"] in ("QUEUED", "PROCESSING") and time.monotonic() - started < 3
        assert (await http.get(f"/v1/jobs/{slow['id']}", params={"wait": 61})).status_code == 400
        await http.post(f"/v1/jobs/{slow['id']}/cancel")


async def _events(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    return events


async def test_events_stream_arrives_in_order_across_a_retry(stack: Stack) -> None:
    stack.engine.add_fault(Fault(status=500, times=1, path="/v1/chat/completions"))
    async with stack.http() as http:
        job = await submit(
            http, "/v1/chat/completions", {"model": "fake-chat", "messages": CHAT, "fake_chunk_delay": 0}
        )
        async with asyncio.timeout(20):
            events = await _events(http, job["id"])
    statuses = [(e["status"], e["attempts"]) for e in events]
    full = [("QUEUED", 0), ("PROCESSING", 1), ("QUEUED", 1), ("PROCESSING", 2), ("PROCESSED", 2)]
    # The stream may start after the first claim; from there on nothing is missed or reordered.
    assert statuses == full[full.index(statuses[0]) :], statuses
    assert events[-1]["result"]["choices"]
    retried = next(e for e in events if e["status"] == "QUEUED" and e["attempts"] == 1)
    assert retried["error"]["type"] == "upstream_error" and retried["error"]["attempt"] == 1


async def test_events_of_an_ended_job_and_of_another_users_job(stack: Stack) -> None:
    async with stack.http() as http:
        job = await submit(http, "/v1/embeddings", {"model": "fake-embed", "input": "x"})
        await wait_job(http, job["id"])
        events = await _events(http, job["id"])
        assert [e["status"] for e in events] == ["PROCESSED"]
    bob = await stack.hub.new_user("bob")
    async with stack.http(bob) as other:
        assert (await other.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert (await other.get(f"/v1/jobs/{job['id']}/events")).status_code == 404
        assert (await other.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 404
        assert (await other.post(f"/v1/jobs/{job['id']}/retry")).status_code == 404
        assert (await other.get("/v1/jobs")).json()["data"] == []


# --------------------------------------------------------------------------- failures


async def test_transient_failures_back_off_then_fail_after_max_attempts(stack: Stack) -> None:
    stack.engine.add_fault(Fault(status=503, times=2, path="/v1/embeddings"))
    async with stack.http() as http:
        recovers = await submit(http, "/v1/embeddings", {"model": "fake-embed", "input": "x"})
        done = await wait_job(http, recovers["id"])
        assert done["status"] == "PROCESSED" and done["attempts"] == 3, done
        always = await submit(
            http, "/v1/embeddings", {"model": "fake-embed", "input": "x", "fake_fault": "status=500"}
        )
        failed = await wait_job(http, always["id"])
        assert failed["status"] == "FAILED" and failed["attempts"] == 3
        assert failed["error"]["type"] == "upstream_error" and failed["error"]["attempt"] == 3
        assert failed["result"] is None
        rate_limited = await submit(
            http, "/v1/embeddings", {"model": "fake-embed", "input": "x", "fake_fault": "status=429"}
        )
        assert (await wait_job(http, rate_limited["id"]))["attempts"] == 3


async def test_engine_4xx_fails_at_once_and_retry_runs_it_again(stack: Stack) -> None:
    stack.engine.add_fault(Fault(status=400, times=1, path="/v1/chat/completions"))
    async with stack.http() as http:
        job = await submit(http, "/v1/chat/completions", {"model": "fake-chat", "messages": CHAT})
        failed = await wait_job(http, job["id"])
        assert failed["status"] == "FAILED" and failed["attempts"] == 1
        assert failed["error"]["attempt"] == 1 and failed["error"]["status"] == 400
        retried = await http.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202 and retried.json()["status"] == "QUEUED"
        assert retried.json()["attempts"] == 0 and retried.json()["error"] is None
        done = await wait_job(http, job["id"])
        assert done["status"] == "PROCESSED" and done["attempts"] == 1
        again = await http.post(f"/v1/jobs/{job['id']}/retry")
        assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"
        cancel_done = await http.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel_done.status_code == 409


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
async def test_cancel_queued_and_processing_jobs(hub: RunningHub, transport: str) -> None:
    async with (
        small_stack(hub, max_concurrency=1, types=["llm"], transport=transport) as stack,
        stack.http() as http,
    ):
        running = await submit(
            http, "/v1/chat/completions", {"model": "fake-chat", "messages": CHAT, "fake_fault": "hang"}
        )
        waiting = await submit(http, "/v1/chat/completions", {"model": "fake-chat", "messages": CHAT})
        await stack.engine.wait_until(lambda s: s.in_flight == 1)
        assert await status_of(http, running["id"]) == "PROCESSING"
        assert await status_of(http, waiting["id"]) == "QUEUED"

        canceled = await http.post(f"/v1/jobs/{waiting['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        aborted = await http.post(f"/v1/jobs/{running['id']}/cancel")
        assert aborted.status_code == 200 and aborted.json()["status"] == "CANCELED"
        await stack.engine.wait_until(lambda s: s.aborted == 1 and s.in_flight == 0, timeout=5)
        assert stack.engine.stats.requests["/v1/chat/completions"] == 1  # the queued one never ran

        # The slot is free again, and a canceled job can be retried.
        retried = await http.post(f"/v1/jobs/{waiting['id']}/retry")
        assert retried.status_code == 202
        assert (await wait_job(http, waiting["id"]))["status"] == "PROCESSED"
        assert (await wait_job(http, running["id"], wait=0))["status"] == "CANCELED"


async def test_no_provider_at_submit(stack: Stack) -> None:
    async with stack.http() as http:
        missing = await http.post(
            "/v1/chat/completions", json={"model": "nope", "messages": CHAT, "async": True}
        )
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "no_provider"
        wrong_type = await http.post(
            "/v1/embeddings", json={"model": "fake-chat", "input": "x", "async": True}
        )
        assert wrong_type.status_code == 404
        assert (await http.get("/v1/jobs")).json()["data"] == []


async def test_queued_job_fails_no_provider_after_the_queue_timeout(hub: RunningHub) -> None:
    async with small_stack(hub, max_concurrency=1, types=["embedding"]) as stack, stack.http() as http:
        busy = await submit(
            http, "/v1/embeddings", {"model": "fake-embed", "input": "x", "fake_fault": "hang"}
        )
        await stack.engine.wait_until(lambda s: s.in_flight == 1)
        waiting = await submit(http, "/v1/embeddings", {"model": "fake-embed", "input": "y"})
        hub.hub.registry.all()[0].last_seen = 0.0  # the provider drops out of the online window
        failed = await wait_job(http, waiting["id"], wait=20)
        assert failed["status"] == "FAILED" and failed["error"]["type"] == "no_provider", failed
        assert failed["attempts"] == 0
        await http.post(f"/v1/jobs/{busy['id']}/cancel")
        await stack.engine.wait_until(lambda s: s.in_flight == 0)


# --------------------------------------------------------------------------- idempotency


async def test_idempotency_key_reuse_and_conflict(stack: Stack) -> None:
    body = {"model": "fake-embed", "input": "same"}
    async with stack.http() as http:
        first = await http.post(
            "/v1/embeddings", json={**body, "async": True}, headers={"Idempotency-Key": "k-1"}
        )
        assert first.status_code == 202 and "idempotent-replayed" not in first.headers
        # Key order and the async flag do not change the request.
        again = await http.post(
            "/v1/embeddings",
            json={"async": True, "input": "same", "model": "fake-embed"},
            headers={"Idempotency-Key": "k-1"},
        )
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = await http.post(
            "/v1/embeddings",
            json={**body, "input": "different", "async": True},
            headers={"Idempotency-Key": "k-1"},
        )
        assert other.status_code == 409 and other.json()["error"]["type"] == "conflict"
        other_endpoint = await http.post(
            "/v1/chat/completions",
            json={"model": "fake-chat", "messages": CHAT, "async": True},
            headers={"Idempotency-Key": "k-1"},
        )
        assert other_endpoint.status_code == 409
        bad = await http.post(
            "/v1/embeddings", json={**body, "async": True}, headers={"Idempotency-Key": "x" * 300}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"
        await wait_job(http, first.json()["id"])
        jobs = (await http.get("/v1/jobs")).json()["data"]
        assert [j["id"] for j in jobs] == [first.json()["id"]]
    # Keys are per user.
    bob = await stack.hub.new_user("bob", routing="any")
    provider = stack.hub.hub.registry.all()[0]
    await stack.hub.hub.registry.set_visibility(provider.id, "shared")
    async with stack.http(bob) as other_user:
        mine = await other_user.post(
            "/v1/embeddings",
            json={**body, "input": "bob's", "async": True},
            headers={"Idempotency-Key": "k-1"},
        )
        assert mine.status_code == 202 and mine.json()["id"] != first.json()["id"]
    # A replay answers the same job even after its provider went offline.
    await stack.agents[0].stop()
    provider.last_seen = 0.0
    async with stack.http() as http:

        async def offline() -> bool:
            return bool((await http.get("/v1/models")).json()["data"] == [])

        await until(offline)
        replay = await http.post(
            "/v1/embeddings", json={**body, "async": True}, headers={"Idempotency-Key": "k-1"}
        )
        assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
        fresh = await http.post(
            "/v1/embeddings", json={**body, "async": True}, headers={"Idempotency-Key": "k-2"}
        )
        assert fresh.status_code == 404 and fresh.json()["error"]["type"] == "no_provider"


async def test_concurrent_submissions_with_one_key_make_one_job(stack: Stack) -> None:
    body = {"model": "fake-embed", "input": "race", "async": True}
    async with stack.http() as http:
        answers = await asyncio.gather(
            *[http.post("/v1/embeddings", json=body, headers={"Idempotency-Key": "race"}) for _ in range(8)]
        )
        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["id"] for a in answers}) == 1


# --------------------------------------------------------------------------- listing


async def test_list_filters_cursor_and_summary(stack: Stack) -> None:
    async with stack.http() as http:
        ids = [
            (await submit(http, "/v1/embeddings", {"model": "fake-embed", "input": str(i)}))["id"]
            for i in range(5)
        ]
        failing = await submit(
            http, "/v1/embeddings", {"model": "fake-embed", "input": "x", "fake_fault": "status=404"}
        )
        for job_id in [*ids, failing["id"]]:
            await wait_job(http, job_id)
        page = (await http.get("/v1/jobs", params={"limit": 4})).json()
        assert page["object"] == "list" and len(page["data"]) == 4 and page["has_more"] is True
        assert "result" not in page["data"][0] and page["data"][0]["id"] == failing["id"]
        rest = (await http.get("/v1/jobs", params={"limit": 4, "after": page["last_id"]})).json()
        assert len(rest["data"]) == 2 and rest["has_more"] is False
        assert {j["id"] for j in page["data"] + rest["data"]} == {*ids, failing["id"]}
        failed = (await http.get("/v1/jobs", params={"status": "FAILED"})).json()["data"]
        assert [j["id"] for j in failed] == [failing["id"]]
        assert (await http.get("/v1/jobs", params={"active": 1})).json()["data"] == []
        assert (await http.get("/v1/jobs", params={"status": "BOGUS"})).status_code == 400
        assert (await http.get("/v1/jobs", params={"limit": 201})).status_code == 400
        summary = (await http.get("/v1/jobs/summary")).json()
        assert summary["counts"]["PROCESSED"] == 5 and summary["counts"]["FAILED"] == 1
        assert summary["active"] == 0 and summary["oldest_queued_age_s"] is None
        assert summary["dispatcher"]["alive"] is True and summary["scope"] == "user"
        assert (await http.get("/v1/jobs/summary/")).status_code == 200
        assert (await http.get("/v1/jobs/job_nope")).status_code == 404


async def test_file_upload_endpoints_refuse_async(stack: Stack) -> None:
    async with stack.http() as http:
        answer = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "fake-whisper", "async": "true"},
            files={"file": ("a.wav", b"RIFF....", "audio/wav")},
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "async"
        wrong = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "async": "yes"}
        )
        assert wrong.status_code == 400
        invalid = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": [], "async": True}
        )
        assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "messages"
        assert (await http.get("/v1/jobs")).json()["data"] == []


# --------------------------------------------------------------------------- fairness


async def test_two_users_queueing_100_jobs_each_are_interleaved(hub: RunningHub) -> None:
    async with small_stack(hub, max_concurrency=2, types=["embedding"]) as stack:
        provider = hub.hub.registry.all()[0]
        await hub.hub.registry.set_visibility(provider.id, "shared")
        bob = await hub.new_user("bob", routing="any")
        body = {"model": "fake-embed", "input": "x", "fake_fault": "latency=0.01"}
        batch = {"requests": [{"endpoint": "/v1/embeddings", "body": body}] * 100}
        async with stack.http() as alice_http, stack.http(bob) as bob_http:
            first, second = await asyncio.gather(
                alice_http.post("/v1/batches", json=batch), bob_http.post("/v1/batches", json=batch)
            )
            assert first.status_code == second.status_code == 202
            for http, batch_id in ((alice_http, first.json()["id"]), (bob_http, second.json()["id"])):

                async def done(http: httpx.AsyncClient = http, batch_id: str = batch_id) -> bool:
                    return bool((await http.get(f"/v1/batches/{batch_id}")).json()["status"] == "DONE")

                await until(done, timeout=60)
        async with hub.hub.database.read() as session:
            rows = [
                j
                for b in (first.json()["id"], second.json()["id"])
                for j in await jobs_q.batch_jobs(session, batch_id=b)
            ]
        assert all(j.status == "PROCESSED" for j in rows)
        order = [j.user_id for j in sorted(rows, key=lambda j: j.started_at or j.created_at)]
        bob_id = next(j.user_id for j in rows if j.batch_id == second.json()["id"])
        start = order.index(bob_id)
        # From bob's first job until one user runs out, nobody gets more than 2 turns in a row.
        tail = order[start:]
        end = min(len(tail), 2 * min(tail.count(bob_id), len(tail) - tail.count(bob_id)))
        longest = run = 1
        for previous, current in itertools.pairwise(tail[:end]):
            run = run + 1 if previous == current else 1
            longest = max(longest, run)
        assert longest <= 2, tail[:end]
        assert start <= 30, order[:40]


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_drains_running_jobs_and_hands_the_rest_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", job_poll_interval_s=0.2, job_drain_timeout_s=0.5)
    async with AsyncExitStack() as exits:
        engine, url = await exits.enter_async_context(engine_server())
        first = running_hub(settings)
        hub = await first.__aenter__()
        try:
            key = await hub.new_user("alice")
            await exits.enter_async_context(
                run_agent(hub.base_url, key, "rig", services_for(url, types=["embedding"]))
            )
            async with httpx.AsyncClient(
                base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
            ) as http:
                quick = await submit(
                    http, "/v1/embeddings", {"model": "fake-embed", "input": "q", "fake_fault": "latency=0.2"}
                )
                slow = await submit(
                    http, "/v1/embeddings", {"model": "fake-embed", "input": "s", "fake_fault": "latency=3"}
                )
                await engine.wait_until(lambda s: s.in_flight == 2)
        finally:
            await first.__aexit__(None, None, None)  # the hub stops while the agent still runs
        await engine.wait_until(lambda s: s.in_flight == 0, timeout=2)
        assert engine.stats.aborted == 1 and engine.stats.models["fake-embed"].requests == 2

        # Read the rows before a new hub starts: its dispatcher may claim the job at once.
        database = Database(settings)
        try:
            async with database.read() as session:
                drained = await jobs_q.get_job(session, job_id=quick["id"], user_id=None)
                handed_back = await jobs_q.get_job(session, job_id=slow["id"], user_id=None)
        finally:
            await database.dispose()
        assert drained is not None and drained.status == "PROCESSED"
        assert handed_back is not None and handed_back.status == "QUEUED" and handed_back.attempts == 0
        async with running_hub(settings) as again:
            async with (
                run_agent(again.base_url, key, "rig", services_for(url, types=["embedding"])),
                httpx.AsyncClient(
                    base_url=again.base_url, headers={"Authorization": f"Bearer {key}"}
                ) as http,
            ):
                done = await wait_job(http, slow["id"])
                assert done["status"] == "PROCESSED" and done["attempts"] == 1
