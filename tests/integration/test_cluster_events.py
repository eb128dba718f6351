"""Two hubs on one PostgreSQL database and one Redis: per-key limits shared between them,
revocations seen at once, job and workflow-run changes fanned out, Redis outages survived."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from inference_club.services import jobs as jobs_module
from inference_club.surfaces.cli import main as cli_main
from inference_club.testing.servers import ProcessHandle, free_port
from tests.conftest import RunningHub, make_settings, running_hub, skip_or_fail
from tests.integration.conftest import engine_server, run_agent, services_for
from tests.integration.redis_fixtures import redis_url_fixture  # noqa: F401  (the redis_url fixture)
from tests.polling import eventually

pytestmark = pytest.mark.postgres

NOBODY = {"model": "nobody-serves-this", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def shared_db(postgres_database: str) -> str:
    from tests.conftest import _truncate_all

    asyncio.run(_truncate_all(postgres_database))
    return postgres_database


@asynccontextmanager
async def two_hubs(
    tmp_path: Path, database_url: str, redis_url: str, **overrides: Any
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    async with AsyncExitStack() as stack:
        hubs = []
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, database_url, redis_url=redis_url, **overrides)
            hub = await stack.enter_async_context(running_hub(settings))
            assert hub.hub.events is not None
            async with asyncio.timeout(10):
                await hub.hub.events.broadcast.connected.wait()
            hubs.append(hub)
        yield hubs[0], hubs[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------- rate limits


async def test_request_limit_is_shared_by_both_hubs(tmp_path: Path, shared_db: str, redis_url: str) -> None:
    async with two_hubs(tmp_path, shared_db, redis_url, rate_limit_rpm=12) as (a, b):
        key = await a.new_user("alice")
        other = await a.new_user("bob")
        async with (
            httpx.AsyncClient(base_url=a.base_url) as on_a,
            httpx.AsyncClient(base_url=b.base_url) as on_b,
        ):

            async def fire(i: int) -> httpx.Response:
                return await (on_a if i % 2 else on_b).post(
                    "/v1/chat/completions", json=NOBODY, headers=bearer(key)
                )

            answers = await asyncio.gather(*(fire(i) for i in range(40)))
            admitted = [r for r in answers if r.status_code != 429]
            refused = [r for r in answers if r.status_code == 429]
            assert len(admitted) == 12  # 404: counted although nothing serves the model
            assert {r.status_code for r in admitted} == {404}
            assert len(refused) == 28
            for answer in refused:
                assert answer.json()["error"]["type"] == "rate_limited"
                assert 1 <= int(answer.headers["retry-after"]) <= 60
                assert answer.headers["x-ratelimit-remaining-requests"] == "0"
                assert answer.headers["x-ratelimit-limit-requests"] == "12"
            # Each admitted request took its own place in the window.
            remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
            assert remaining == list(range(12))
            # Another key has its own window, on either hub.
            assert (
                await on_b.post("/v1/chat/completions", json=NOBODY, headers=bearer(other))
            ).status_code == 404


@pytest.mark.slow
async def test_a_120_per_minute_key_gets_120_of_500_across_hubs(
    tmp_path: Path, shared_db: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, shared_db, redis_url, rate_limit_rpm=120) as (a, b):
        key = await a.new_user("alice")
        gate = asyncio.Semaphore(50)
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=60) as on_a,
            httpx.AsyncClient(base_url=b.base_url, timeout=60) as on_b,
        ):

            async def fire(i: int) -> int:
                async with gate:
                    answer = await (on_a if i % 2 else on_b).post(
                        "/v1/chat/completions", json=NOBODY, headers=bearer(key)
                    )
                if answer.status_code == 429:
                    assert int(answer.headers["retry-after"]) >= 1
                return answer.status_code

            statuses = await asyncio.gather(*(fire(i) for i in range(500)))
        assert statuses.count(404) == 120
        assert statuses.count(429) == 380


async def test_token_limit_is_shared_by_both_hubs(tmp_path: Path, shared_db: str, redis_url: str) -> None:
    async with (
        two_hubs(tmp_path, shared_db, redis_url, rate_limit_tpm=5) as (a, b),
        AsyncExitStack() as exits,
    ):
        key = await a.new_user("alice")
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(a.base_url, key, "rig", services_for(url, types=["llm"])))
        async with (
            httpx.AsyncClient(base_url=a.base_url, headers=bearer(key)) as on_a,
            httpx.AsyncClient(base_url=b.base_url, headers=bearer(key)) as on_b,
        ):
            first = await on_a.post(
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": [{"role": "user", "content": "tell me a long story please"}],
                },
            )
            assert first.status_code == 200, first.text
            assert first.headers["x-ratelimit-limit-tokens"] == "5"
            assert first.headers["x-ratelimit-remaining-tokens"] == "5"
            used = first.json()["usage"]["total_tokens"]
            assert used >= 5
            limiter = a.hub.limiter
            await eventually(lambda: _settled(limiter), timeout=10, what="token use recorded")
            refused = await on_b.post("/v1/chat/completions", json=NOBODY)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["type"] == "rate_limited"
            assert "tokens per minute" in refused.json()["error"]["message"]
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
            # The requests-per-minute limit is off: no request headers.
            assert "x-ratelimit-limit-requests" not in refused.headers


async def _settled(limiter: object) -> bool:
    from inference_club.cluster.ratelimit import SharedRateLimiter

    assert isinstance(limiter, SharedRateLimiter)
    await limiter.settled()
    return True


# --------------------------------------------------------------------------- revocation


async def _refused(http: httpx.AsyncClient, key: str) -> bool:
    return (await http.get("/v1/models", headers=bearer(key))).status_code == 401


async def test_key_revoked_on_one_hub_is_refused_by_the_other(
    tmp_path: Path, shared_db: str, redis_url: str
) -> None:
    # A long key cache (and a poll every 30 s): only the notification can explain a quick refusal.
    async with (
        two_hubs(tmp_path, shared_db, redis_url, key_cache_ttl_s=60.0) as (a, b),
        AsyncExitStack() as exits,
    ):
        manager = await a.new_user("alice")
        created = await a.hub.accounts.create_key("alice")
        doomed = created.raw
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(b.base_url, doomed, "rig", services_for(url, types=["llm"]), transport="tunnel")
        )
        tunnels = b.hub.key_watch.live_key_ids
        assert created.key.id in tunnels()
        async with (
            httpx.AsyncClient(base_url=a.base_url) as on_a,
            httpx.AsyncClient(base_url=b.base_url) as on_b,
        ):
            assert (await on_b.get("/v1/models", headers=bearer(doomed))).status_code == 200  # cached on B
            revoked = await on_a.delete(f"/v1/keys/{created.key.id}", headers=bearer(manager))
            assert revoked.status_code == 200
            await eventually(lambda: _refused(on_b, doomed), timeout=5, what="B refuses the revoked key")
            await eventually(
                lambda: _true(created.key.id not in tunnels()), timeout=5, what="B closed the key's tunnel"
            )
            assert (await on_b.get("/v1/models", headers=bearer(manager))).status_code == 200


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("command", ["keys revoke", "users disable"])
async def test_cli_revocation_and_disable_reach_running_hubs(
    tmp_path: Path, shared_db: str, redis_url: str, command: str
) -> None:
    async with two_hubs(tmp_path, shared_db, redis_url, key_cache_ttl_s=60.0) as (a, b):
        await a.new_user("alice")
        created = await a.hub.accounts.create_key("alice")
        async with httpx.AsyncClient(base_url=b.base_url) as on_b:
            assert (await on_b.get("/v1/models", headers=bearer(created.raw))).status_code == 200
            env = {
                "IC_DATABASE_URL": shared_db,
                "IC_REDIS_URL": redis_url,
                "IC_DATA_DIR": str(tmp_path / "cli"),
            }
            target = created.key.id if command == "keys revoke" else "alice"
            result = await asyncio.to_thread(
                CliRunner().invoke, cli_main, [*command.split(), target], env=env
            )
            assert result.exit_code == 0, result.output
            await eventually(
                lambda: _refused(on_b, created.raw), timeout=5, what=f"B refuses the key after {command}"
            )


async def test_disabled_user_is_refused_by_the_other_hub(
    tmp_path: Path, shared_db: str, redis_url: str
) -> None:
    async with (
        two_hubs(tmp_path, shared_db, redis_url, key_cache_ttl_s=60.0) as (a, b),
        AsyncExitStack() as exits,
    ):
        admin = await a.new_user("root", admin=True)
        member = await a.new_user("alice")
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(b.base_url, member, "rig", services_for(url, types=["llm"]), transport="tunnel")
        )
        tunnels = b.hub.key_watch.live_key_ids
        assert len(tunnels()) == 1
        async with (
            httpx.AsyncClient(base_url=a.base_url) as on_a,
            httpx.AsyncClient(base_url=b.base_url) as on_b,
        ):
            assert (await on_b.get("/v1/models", headers=bearer(member))).status_code == 200
            users = (await on_a.get("/v1/admin/users", headers=bearer(admin))).json()["data"]
            user_id = next(u["id"] for u in users if u["username"] == "alice")
            disabled = await on_a.post(f"/v1/admin/users/{user_id}/disable", headers=bearer(admin))
            assert disabled.status_code == 200, disabled.text
            await eventually(
                lambda: _refused(on_b, member), timeout=5, what="B refuses the disabled user's key"
            )
            await eventually(lambda: _true(not tunnels()), timeout=5, what="B closed the user's tunnel")
            assert (
                await on_a.post(f"/v1/admin/users/{user_id}/enable", headers=bearer(admin))
            ).status_code == 200
            await eventually(
                lambda: _usable(on_b, member), timeout=5, what="B accepts the enabled user's key"
            )


async def _usable(http: httpx.AsyncClient, key: str) -> bool:
    return (await http.get("/v1/models", headers=bearer(key))).status_code == 200


# --------------------------------------------------------------------------- jobs and runs


async def _job_events(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    return events


async def test_job_run_by_one_hub_is_seen_waiting_on_the_other(
    tmp_path: Path, shared_db: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waiters poll the database only every 30 s here: what wakes them is the notification.
    monkeypatch.setattr(jobs_module, "_POLL_S", 30.0)
    async with (
        two_hubs(tmp_path, shared_db, redis_url, job_queue_timeout_s=60.0, job_poll_interval_s=0.2) as (a, b),
        AsyncExitStack() as exits,
    ):
        # B runs no jobs, so what B's waiter and event stream see is A's work.
        await b.hub.dispatcher.stop()
        key = await a.new_user("alice")
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(a.base_url, key, "rig", services_for(url, types=["llm"], max_concurrency=1))
        )
        async with (
            httpx.AsyncClient(base_url=a.base_url, headers=bearer(key), timeout=40) as on_a,
            httpx.AsyncClient(base_url=b.base_url, headers=bearer(key), timeout=40) as on_b,
        ):
            # Hold the provider's one slot with a slow stream so the job stays queued meanwhile.
            async with on_a.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": [{"role": "user", "content": "one two three four five six"}],
                    "stream": True,
                    "fake_chunk_delay": 5,
                },
            ) as held:
                assert held.status_code == 200
                submitted = await on_a.post(
                    "/v1/chat/completions",
                    json={
                        "model": "fake-chat",
                        "messages": [{"role": "user", "content": "queued"}],
                        "async": True,
                    },
                )
                assert submitted.status_code == 202, submitted.text
                job_id = submitted.json()["id"]
                waiting = asyncio.create_task(on_b.get(f"/v1/jobs/{job_id}", params={"wait": 25}))
                streaming = asyncio.create_task(_job_events(on_b, job_id))
                signals = b.hub.jobs.signals
                await eventually(
                    lambda: _true(signals.watchers(job_id) == 2),
                    timeout=10,
                    what="B's waiter and event stream subscribed",
                )
            # The stream is closed: A frees the slot and runs the job.
            async with asyncio.timeout(40):
                answer = await waiting
            async with asyncio.timeout(40):
                events = await streaming
        assert answer.status_code == 200
        assert answer.json()["status"] == "PROCESSED"
        assert answer.json()["result"]["choices"]
        statuses = [e["status"] for e in events]
        assert statuses[0] == "QUEUED"
        assert statuses[-1] == "PROCESSED"
        assert "PROCESSING" in statuses
        assert b.hub.dispatcher.stats.claimed == 0  # A ran it


async def test_workflow_run_changes_wake_the_other_hub(
    tmp_path: Path, shared_db: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, shared_db, redis_url) as (a, b):
        with b.hub.workflows.signals.watch("wfr_example") as changed:
            a.hub.workflows.signals.publish("wfr_example")
            async with asyncio.timeout(10):
                await changed.wait()
        with (
            a.hub.workflows.signals.watch("wfr_other") as unrelated,
            b.hub.workflows.signals.watch("wfr_example") as changed,
        ):
            a.hub.workflows.signals.publish("wfr_example")
            async with asyncio.timeout(10):
                await changed.wait()
            assert not unrelated.is_set()


# --------------------------------------------------------------------------- Redis down


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], ProcessHandle]]:
    """Start (and restart) a Redis of our own on one free port; killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    port = free_port()
    started: list[ProcessHandle] = []

    def start() -> ProcessHandle:
        handle = ProcessHandle(
            [str(binary), "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
            tmp_path / "redis.log",
            cwd=tmp_path,
        )
        started.append(handle)
        return handle

    start.port = port  # type: ignore[attr-defined]
    yield start
    for handle in started:
        handle.stop()


async def _redis_answers(url: str) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def test_redis_outage_answers_busy_and_recovers(
    tmp_path: Path, shared_db: str, private_redis: Callable[[], ProcessHandle]
) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"  # type: ignore[attr-defined]
    server = private_redis()
    await eventually(lambda: _redis_answers(url), timeout=10, what="private Redis up")
    async with two_hubs(tmp_path, shared_db, url, rate_limit_rpm=1000, key_cache_ttl_s=60.0) as (a, b):
        key = await a.new_user("alice")
        doomed = await a.hub.accounts.create_key("alice")
        async with (
            httpx.AsyncClient(base_url=a.base_url) as on_a,
            httpx.AsyncClient(base_url=b.base_url) as on_b,
        ):
            assert (
                await on_b.post("/v1/chat/completions", json=NOBODY, headers=bearer(key))
            ).status_code == 404
            assert (await on_b.get("/v1/models", headers=bearer(doomed.raw))).status_code == 200
            server.stop()
            busy = await on_b.post("/v1/chat/completions", json=NOBODY, headers=bearer(key))
            assert busy.status_code == 503
            assert busy.json()["error"]["type"] == "busy"
            assert int(busy.headers["retry-after"]) >= 1
            # What needs no Redis keeps working.
            assert (await on_b.get("/v1/models", headers=bearer(key))).status_code == 200
            events_b = b.hub.events
            assert events_b is not None
            await eventually(
                lambda: _true(not events_b.broadcast.connected.is_set()),
                timeout=10,
                what="B noticed the lost subscription",
            )

            private_redis()
            await eventually(lambda: _redis_answers(url), timeout=10, what="private Redis back")
            await eventually(
                lambda: _status_is(on_b, key, 404), timeout=15, what="B limits again through Redis"
            )
            async with asyncio.timeout(15):
                await events_b.broadcast.connected.wait()
            # The subscription is back: a revocation on A reaches B at once again.
            assert (await on_a.delete(f"/v1/keys/{doomed.key.id}", headers=bearer(key))).status_code == 200
            await eventually(lambda: _refused(on_b, doomed.raw), timeout=5, what="B refuses the revoked key")


async def _status_is(http: httpx.AsyncClient, key: str, status: int) -> bool:
    return (await http.post("/v1/chat/completions", json=NOBODY, headers=bearer(key))).status_code == status
