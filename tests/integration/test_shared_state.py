"""Two hubs on one PostgreSQL database and one Redis: shared presence and capacity slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.tcp_proxy import TcpProxy
from tests.conftest import RunningHub, _truncate_all, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB, fresh_redis_url

pytestmark = pytest.mark.postgres

DB = TEST_DB
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "any replica"}]


@asynccontextmanager
async def two_hubs(
    tmp_path: Path, database: str, redis_url: str, **overrides: object
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    await _truncate_all(database)
    common: dict[str, object] = {"redis_url": redis_url, "secret_key": "s" * 40, "queue_timeout_s": 30.0}
    common.update(overrides)
    async with AsyncExitStack() as exits:
        a = await exits.enter_async_context(
            running_hub(make_settings(tmp_path / "a", database, replica_id="hub-a", **common))
        )
        b = await exits.enter_async_context(
            running_hub(make_settings(tmp_path / "b", database, replica_id="hub-b", **common))
        )
        yield a, b


@pytest.fixture
async def redis_url() -> str:
    return await fresh_redis_url(DB)


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def _online(hub: RunningHub, name: str) -> bool:
    return any(p.name == name for p in hub.hub.registry.online())


async def test_an_agent_heartbeating_to_one_hub_is_routable_from_the_other(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, postgres_database, redis_url) as (a, b), AsyncExitStack() as exits:
        key = await a.new_user("alice")
        engine, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(a.base_url, key, "rig", services_for(url, types=["llm"])))
        await until(lambda: _online(b, "rig"))
        seen = next(p for p in b.hub.registry.online() if p.name == "rig")
        assert [s.max_concurrency for s in seen.services] == [4]
        assert "fake-chat" in seen.services[0].models
        client = openai.AsyncOpenAI(base_url=f"{b.base_url}/v1", api_key=key, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(model="fake-chat", messages=CHAT)
        assert raw.headers["x-ic-provider"] == "rig"
        assert "any replica" in (raw.parse().choices[0].message.content or "")
        assert engine.stats.requests["/v1/chat/completions"] == 1


@pytest.mark.slow
async def test_fifty_chats_over_two_hubs_never_exceed_the_services_concurrency(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, postgres_database, redis_url) as (a, b), AsyncExitStack() as exits:
        key = await a.new_user("alice")
        engine, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(b.base_url, key, "small", services_for(url, max_concurrency=2, types=["llm"]))
        )
        await until(lambda: _online(a, "small"))
        clients = [
            openai.AsyncOpenAI(base_url=f"{h.base_url}/v1", api_key=key, max_retries=0, timeout=60)
            for h in (a, b)
        ]
        answers = await asyncio.gather(
            *[
                clients[i % 2].chat.completions.create(
                    model="fake-chat", messages=CHAT, extra_body={"fake_fault": "latency=0.05"}
                )
                for i in range(50)
            ]
        )
        assert len(answers) == 50
        assert engine.stats.requests["/v1/chat/completions"] == 50
        assert engine.stats.max_in_flight == 2  # reached, never exceeded across both hubs
        for hub in (a, b):
            capacity = hub.hub.shared_capacity
            assert capacity is not None
            await until(lambda c=capacity: all(used == 0 for used, _ in c.snapshot().values()))  # type: ignore[misc]


async def test_a_tunnel_on_one_hub_shows_on_the_other_until_it_closes(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, postgres_database, redis_url) as (a, b), AsyncExitStack() as exits:
        key = await a.new_user("alice")
        _engine, url = await exits.enter_async_context(engine_server())
        agent = await exits.enter_async_context(
            run_agent(a.base_url, key, "tunnelled", services_for(url, types=["llm"]), transport="tunnel")
        )
        await until(lambda: _online(b, "tunnelled"))
        seen = next(p for p in b.hub.registry.all() if p.name == "tunnelled")
        assert seen.tunnels == 0 and seen.remote_tunnels == {"hub-a": 1}
        await agent.stop()
        await until(lambda: not _online(b, "tunnelled"))
        assert seen.remote_tunnels == {}


async def test_redis_down_answers_busy_then_the_hubs_recover_by_themselves(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    async with (
        TcpProxy(REDIS_HOST, REDIS_PORT) as proxy,
        two_hubs(tmp_path, postgres_database, f"redis://{proxy.address}/{DB}") as (a, b),
        AsyncExitStack() as exits,
    ):
        key = await a.new_user("alice")
        _engine, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(a.base_url, key, "rig", services_for(url, types=["llm"])))
        await until(lambda: _online(b, "rig"))
        async with httpx.AsyncClient(
            base_url=b.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            ready = await http.get("/readyz")
            assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}
            await proxy.set_mode("refuse")
            busy = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["type"] == "busy" and busy.headers["retry-after"]
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
            # A Redis that accepts and never answers: still a 503, long before the 30 s
            # queue timeout (the client gives up after 10 s).
            await proxy.set_mode("blackhole")
            hung = await http.post(
                "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT}, timeout=10
            )
            assert hung.status_code == 503 and hung.json()["error"]["type"] == "busy", hung.text
            await proxy.set_mode("pass")
            deadline = time.monotonic() + 15
            while True:
                ok = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
                if ok.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert ok.status_code == 200, ok.text


@pytest.mark.slow
async def test_jobs_and_chats_on_both_hubs_share_the_services_slots(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    async with two_hubs(tmp_path, postgres_database, redis_url) as (a, b), AsyncExitStack() as exits:
        key = await a.new_user("alice")
        engine, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(b.base_url, key, "small", services_for(url, max_concurrency=2, types=["llm"]))
        )
        await until(lambda: _online(a, "small"))
        https = [
            await exits.enter_async_context(
                httpx.AsyncClient(base_url=h.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            )
            for h in (a, b)
        ]
        body = {"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=0.05"}
        jobs = []
        for i in range(20):
            answer = await https[i % 2].post("/v1/chat/completions", json={**body, "async": True})
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json()["id"])
        chats = await asyncio.gather(
            *[https[i % 2].post("/v1/chat/completions", json=body) for i in range(10)]
        )
        assert [c.status_code for c in chats] == [200] * 10
        deadline = time.monotonic() + 60
        while True:
            statuses = [(await https[0].get(f"/v1/jobs/{job}")).json()["status"] for job in jobs]
            if all(s in ("PROCESSED", "FAILED") for s in statuses) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert statuses == ["PROCESSED"] * 20
        assert engine.stats.requests["/v1/chat/completions"] == 30
        assert engine.stats.max_in_flight == 2
