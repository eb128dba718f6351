"""Metrics and per-request log lines of a whole stack: hub, in-process agent, fake engine.

Every metric family is scraped before and after the work that should move it; the
request id a client sends is followed through the hub's log line and the agent's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_club.agent.config import build_config
from inference_club.agent.runner import AgentRunner
from inference_club.settings import Settings
from tests.conftest import RunningHub, make_settings
from tests.integration.conftest import Stack, engine_server, services_for

METRICS_TOKEN = "scrape-token-for-tests"
AGENT_METRICS_TOKEN = "agent-scrape-token"
PROMPT = "a prompt that must never be logged"
CHAT = [{"role": "user", "content": PROMPT}]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The usage recorder never flushes on its own here, so its backlog is visible.
    return make_settings(
        tmp_path / "data",
        metrics_token=METRICS_TOKEN,
        metrics_refresh_s=0.0,
        usage_flush_interval_s=3600.0,
        job_poll_interval_s=0.2,
        queue_timeout_s=30.0,
    )


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(base_url: str, token: str = METRICS_TOKEN) -> Samples:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        answer = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


@asynccontextmanager
async def agent(
    hub: RunningHub, key: str, engine_url: str, transport: str, *, max_concurrency: int = 4
) -> AsyncIterator[AgentRunner]:
    config = build_config(
        {
            "hub": hub.base_url,
            "key": key,
            "name": "rig",
            "transport": transport,
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "metrics_token": AGENT_METRICS_TOKEN,
            "services": services_for(engine_url, max_concurrency=max_concurrency, types=["llm"]),
        }
    )
    runner = AgentRunner(config, report_gpus=False)
    await runner.start()
    try:
        async with asyncio.timeout(10):
            await runner.registered.wait()
        yield runner
    finally:
        await runner.stop()


def agent_metrics_url(runner: AgentRunner) -> str:
    assert runner.metrics_server is not None and runner.metrics_server.bound_port
    return f"http://127.0.0.1:{runner.metrics_server.bound_port}"


async def until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- metrics move


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
async def test_every_family_moves_during_a_small_run(hub: RunningHub, transport: str) -> None:
    key = await hub.new_user("alice")
    http = httpx.AsyncClient(base_url=hub.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"})
    async with AsyncExitStack() as exits:
        await exits.enter_async_context(http)
        _, engine_url = await exits.enter_async_context(engine_server())
        before = await scrape(hub.base_url)
        assert value(before, "ic_providers_online", transport=transport) == 0
        assert value(before, "ic_metrics_database_up") == 1

        runner = await exits.enter_async_context(agent(hub, key, engine_url, transport, max_concurrency=1))
        online = await scrape(hub.base_url)
        assert value(online, "ic_providers_online", transport=transport) == 1
        assert value(online, "ic_providers_known") == 1

        chat = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert chat.status_code == 200, chat.text
        after_chat = await scrape(hub.base_url)
        route = {"route": "/v1/chat/completions"}
        assert (
            value(
                after_chat, "ic_http_requests_total", **route, method="POST", model="fake-chat", status="200"
            )
            == 1
        )
        assert value(after_chat, "ic_http_request_duration_seconds_count", **route) == 1
        assert value(after_chat, "ic_inference_calls_total", model="fake-chat", status="200") == 1
        assert value(after_chat, "ic_inference_duration_seconds_count", model="fake-chat") == 1
        assert value(after_chat, "ic_inference_ttft_seconds_count", model="fake-chat") == 1
        assert value(after_chat, "ic_tokens_total", model="fake-chat", direction="in") > 0
        assert value(after_chat, "ic_tokens_total", model="fake-chat", direction="out") > 0
        assert value(after_chat, "ic_http_request_bytes_total") > value(before, "ic_http_request_bytes_total")
        assert value(after_chat, "ic_http_response_bytes_total") > value(
            before, "ic_http_response_bytes_total"
        )
        assert value(after_chat, "ic_usage_backlog") == 1
        if transport == "tunnel":
            assert value(after_chat, "ic_tunnel_connections") == 1
            assert value(after_chat, "ic_tunnel_bytes_total", direction="in") > 0
            assert value(after_chat, "ic_tunnel_bytes_total", direction="out") > 0
            for direction in ("in", "out"):
                messages = value(after_chat, "ic_tunnel_messages_total", direction=direction)
                assert 0 < messages <= value(after_chat, "ic_tunnel_frames_total", direction=direction)

        # A slow stream holds the only slot: a job stays queued, a second request waits.
        stream_body = {
            "model": "fake-chat",
            "messages": CHAT,
            "stream": True,
            "fake_chunks": 4,
            "fake_chunk_delay": 0.5,
        }
        async with http.stream("POST", "/v1/chat/completions", json=stream_body) as streaming:
            assert streaming.status_code == 200
            chunks = streaming.aiter_bytes()
            await anext(chunks)
            queued = await http.post(
                "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "async": True}
            )
            assert queued.status_code == 202, queued.text
            second = asyncio.create_task(
                http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            )

            async def someone_waits() -> bool:
                return value(await scrape(hub.base_url), "ic_capacity_waiting") == 1

            await until(someone_waits)
            busy = await scrape(hub.base_url)
            assert value(busy, "ic_http_requests_in_flight") >= 3  # the stream, the waiter, this scrape
            assert value(busy, "ic_capacity_slots_in_use") == 1
            assert value(busy, "ic_capacity_slots_limit") == 1
            assert value(busy, "ic_jobs", status="QUEUED") == 1
            assert value(busy, "ic_dispatcher_lag_seconds") > 0
            assert value(busy, "ic_dispatcher_last_pass_age_seconds") >= 0
            if transport == "tunnel":
                assert value(busy, "ic_tunnel_streams_open") == 1
            async for _ in chunks:
                pass
        assert (await second).status_code == 200
        job = (await http.get(f"/v1/jobs/{queued.json()['id']}", params={"wait": 20})).json()
        assert job["status"] == "PROCESSED", job
        idle = await scrape(hub.base_url)
        assert value(idle, "ic_capacity_waiting") == 0
        assert value(idle, "ic_capacity_slots_in_use") == 0
        assert value(idle, "ic_http_requests_in_flight") == 1  # this scrape
        assert value(idle, "ic_jobs", status="QUEUED") == 0
        assert value(idle, "ic_dispatcher_lag_seconds") == 0
        assert value(idle, "ic_jobs_finished_total", status="PROCESSED") == 1
        assert value(idle, "ic_http_requests_total", **route, model="fake-chat", status="200") == 3
        assert value(idle, "ic_http_requests_total", **route, status="202") == 1
        assert value(idle, "ic_inference_calls_total", model="fake-chat", status="200") == 4

        # A workflow run that waits at a gate.
        run = await http.post(
            "/v1/workflows/runs", json={"spec": {"steps": [{"id": "gate", "kind": "gate"}]}}
        )
        assert run.status_code == 202, run.text
        awaiting = await scrape(hub.base_url)
        assert value(awaiting, "ic_workflow_runs", status="AWAITING") == 1
        canceled = await http.post(f"/v1/workflows/runs/{run.json()['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert value(await scrape(hub.base_url), "ic_workflow_runs", status="AWAITING") == 0

        # The agent's own metrics saw the same requests.
        relayed = await scrape(agent_metrics_url(runner), AGENT_METRICS_TOKEN)
        assert value(relayed, "ic_agent_relayed_requests_total", service="llm#0", status="200") == 4
        assert value(relayed, "ic_agent_engine_duration_seconds_count", service="llm#0") == 4
        assert value(relayed, "ic_agent_requests_in_flight", service="llm#0") == 0
        if transport == "tunnel":
            assert value(relayed, "ic_agent_tunnel_connected") == 1
            assert value(relayed, "ic_agent_tunnel_sessions_total") == 1
            assert value(relayed, "ic_agent_tunnel_bytes_total", direction="in") > 0
            for direction in ("in", "out"):
                messages = value(relayed, "ic_agent_tunnel_messages_total", direction=direction)
                assert 0 < messages <= value(relayed, "ic_agent_tunnel_frames_total", direction=direction)

        failed = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "fake_fault": "status=503"}
        )
        assert failed.status_code == 502, failed.text
        errors = await scrape(agent_metrics_url(runner), AGENT_METRICS_TOKEN)
        assert value(errors, "ic_agent_engine_errors_total", service="llm#0", kind="engine") >= 1
        last = await scrape(hub.base_url)
        assert value(last, "ic_http_requests_total", status="502") >= 1

        # Every family docs/operations.md lists is served, by the hub or by the agent.
        hub_names, agent_names = documented_metrics()
        assert not missing(hub_names, last)
        if transport == "tunnel":
            assert not missing(agent_names, errors)


def documented_metrics() -> tuple[set[str], set[str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    names = set(re.findall(r"^\| `(ic_[a-z_]+)` \|", text, re.M))
    return {n for n in names if not n.startswith("ic_agent_")}, {
        n for n in names if n.startswith("ic_agent_")
    }


def missing(names: set[str], samples: Samples) -> set[str]:
    served = {name for name, _ in samples}
    return {n for n in names if n not in served and f"{n}_count" not in served}


# --------------------------------------------------------------------------- who may scrape


async def test_metrics_need_the_token_or_an_admin_key(hub: RunningHub) -> None:
    admin = await hub.new_user("root", admin=True)
    user = await hub.new_user("bob")
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        anonymous = await http.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "invalid_api_key"
        assert "IC_METRICS_TOKEN" in anonymous.json()["error"]["message"]
        for refused in (user, "not-the-token", f"{METRICS_TOKEN}x"):
            answer = await http.get("/metrics", headers={"Authorization": f"Bearer {refused}"})
            assert answer.status_code == 401, refused
            assert answer.json()["error"]["type"] == "invalid_api_key"
        for allowed in (METRICS_TOKEN, admin):
            answer = await http.get("/metrics", headers={"Authorization": f"Bearer {allowed}"})
            assert answer.status_code == 200, answer.text
            assert "ic_http_requests_total" in answer.text


async def test_the_agent_metrics_need_their_token(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with engine_server() as (_, engine_url), agent(hub, key, engine_url, "tunnel") as runner:
        url = agent_metrics_url(runner)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            anonymous = await http.get("/metrics")
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["type"] == "invalid_api_key"
            for refused in (key, "wrong"):
                answer = await http.get("/metrics", headers={"Authorization": f"Bearer {refused}"})
                assert answer.status_code == 401
            allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {AGENT_METRICS_TOKEN}"})
            assert allowed.status_code == 200
            assert "ic_agent_tunnel_connected 1.0" in allowed.text


# --------------------------------------------------------------------------- one request id end to end


def fields_of(caplog: pytest.LogCaptureFixture, logger: str, request_id: str) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if record.name == logger and isinstance(fields, dict) and fields.get("request_id") == request_id:
            found.append(fields)
    return found


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_one_request_id_from_the_client_through_hub_and_agent_logs(
    stack: Stack, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.access")
    caplog.set_level(logging.INFO, logger="inference_club.agent.relay")
    request_id = f"trace-{stack.transport}-{'stream' if stream else 'json'}"
    client = stack.client()
    if stream:
        chunks = await client.chat.completions.create(
            model="fake-chat",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_headers={"x-request-id": request_id},
        )
        async for _ in chunks:
            pass
    else:
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-chat",
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-request-id": request_id},
        )
        assert raw.headers["x-request-id"] == request_id

    async def both_logged() -> bool:
        return bool(
            fields_of(caplog, "inference_club.access", request_id)
            and fields_of(caplog, "inference_club.agent.relay", request_id)
        )

    await until(both_logged)
    [hub_line] = fields_of(caplog, "inference_club.access", request_id)
    [agent_line] = fields_of(caplog, "inference_club.agent.relay", request_id)
    provider = stack.hub.hub.registry.all()[0]
    assert hub_line["status"] == 200 and hub_line["method"] == "POST"
    assert hub_line["path"] == "/v1/chat/completions"
    assert hub_line["model"] == "fake-chat"
    assert hub_line["provider"] == provider.id
    assert hub_line["user"] == provider.user_id
    assert hub_line["bytes_in"] > 0 and hub_line["bytes_out"] > 0 and hub_line["ms"] >= 0
    assert agent_line["status"] == 200 and agent_line["model"] == "fake-chat"
    assert agent_line["service"] == "llm#0" and agent_line["bytes"] > 0
    for line in (hub_line, agent_line):
        text = repr(line)
        assert stack.key not in text and PROMPT not in text


async def test_a_request_without_an_id_gets_one_that_reaches_the_agent(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.access")
    caplog.set_level(logging.INFO, logger="inference_club.agent.relay")
    async with stack.http() as http:
        answer = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
    request_id = answer.headers["x-request-id"]
    assert request_id.startswith("req_")

    async def both_logged() -> bool:
        return bool(
            fields_of(caplog, "inference_club.access", request_id)
            and fields_of(caplog, "inference_club.agent.relay", request_id)
        )

    await until(both_logged)
