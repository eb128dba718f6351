"""Usage that is never lost: token counts for each engine's usage shape, streams without
usage, and clients that disconnect mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.store import usage as usage_q
from inference_club.store.tables import UsageRecord
from inference_club.testing.fake_engine import FakeEngineSettings, FakeEngineState
from tests.conftest import RunningHub
from tests.integration.conftest import engine_server, run_agent

STYLES = ("llamacpp", "vllm", "ollama", "none")
CHAT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "count these four words"}
]  # 4 prompt tokens for the fake engine


@dataclass
class UsageStack:
    hub: RunningHub
    key: str
    engines: dict[str, FakeEngineState]

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.hub.base_url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )

    async def rows(self, request_id: str) -> list[UsageRecord]:
        """The usage rows of one request. The hub records usage after the answer's last byte
        has left, so a client can read the answer before the record exists: wait for it."""
        user = await self.hub.hub.auth.authenticate(f"Bearer {self.key}")
        for _ in range(100):
            await self.hub.hub.usage.flush()
            async with self.hub.hub.database.read() as session:
                rows = await usage_q.recent_usage(session, user_id=user.user_id, limit=1000)
            found = [r for r in rows if r.request_id == request_id]
            if found:
                return found
            await asyncio.sleep(0.05)
        return []


@pytest.fixture
async def usage_stack(hub: RunningHub) -> AsyncIterator[UsageStack]:
    """One agent with an llm service per engine shape; Ollama's OpenAI API reports usage as OpenAI does."""
    key = await hub.new_user("alice")
    engines: dict[str, FakeEngineState] = {}
    services: list[dict[str, Any]] = []
    async with AsyncExitStack() as exits:
        for style in STYLES:
            settings = FakeEngineSettings(usage_style="openai" if style == "ollama" else style)  # type: ignore[arg-type]
            state, url = await exits.enter_async_context(engine_server(FakeEngineState(settings=settings)))
            engines[style] = state
            services.append({"type": "llm", "url": f"{url}/v1", "discover": False, "models": [{"id": style}]})
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services, transport="tunnel"))
        yield UsageStack(hub, key, engines)


async def _one_row(stack: UsageStack, answer: httpx.Response) -> UsageRecord:
    rows = await stack.rows(answer.headers["x-request-id"])
    assert len(rows) == 1, rows
    return rows[0]


async def _chat(stack: UsageStack, model: str, **extra: Any) -> UsageRecord:
    async with stack.http() as http:
        answer = await http.post("/v1/chat/completions", json={"model": model, "messages": CHAT, **extra})
        assert answer.status_code == 200, answer.text
    return await _one_row(stack, answer)


@pytest.mark.parametrize("style", ["llamacpp", "vllm", "ollama"])
async def test_tokens_of_a_plain_answer(usage_stack: UsageStack, style: str) -> None:
    row = await _chat(usage_stack, style, fake_reply="one two three")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (4, 3, 7)
    assert row.error_type is None and row.status_code == 200


@pytest.mark.parametrize(
    ("style", "options"),
    [
        ("llamacpp", None),  # llama.cpp's server always ends a stream with usage (and its timings)
        ("vllm", {"include_usage": True}),  # nested *_tokens_details and extra fields
        ("ollama", {"include_usage": True}),  # a final chunk with no choices
    ],
)
async def test_tokens_of_a_stream_from_its_last_chunk(
    usage_stack: UsageStack, style: str, options: dict[str, Any] | None
) -> None:
    extra: dict[str, Any] = {"stream": True, "fake_reply": "one two three"}
    if options:
        extra["stream_options"] = options
    row = await _chat(usage_stack, style, **extra)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (4, 3, 7)
    assert row.ttft_ms is not None and row.error_type is None


@pytest.mark.parametrize("style", ["none", "ollama"])
async def test_a_stream_without_usage_is_recorded_with_null_tokens(
    usage_stack: UsageStack, style: str
) -> None:
    row = await _chat(usage_stack, style, stream=True)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)
    assert row.ttft_ms is not None and row.status_code == 200 and row.error_type is None
    plain = await _chat(usage_stack, "none")
    assert plain.total_tokens is None


async def test_responses_api_usage(usage_stack: UsageStack) -> None:
    async with usage_stack.http() as http:
        plain = await http.post(
            "/v1/responses", json={"model": "vllm", "input": "a b", "fake_reply": "x y z"}
        )
        streamed = await http.post(
            "/v1/responses", json={"model": "vllm", "input": "a b", "fake_reply": "x y z", "stream": True}
        )
    for answer in (plain, streamed):
        row = await _one_row(usage_stack, answer)
        assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (2, 3, 5)


async def test_a_client_disconnect_mid_stream_is_recorded_as_such(usage_stack: UsageStack) -> None:
    body = {
        "model": "llamacpp",
        "messages": CHAT,
        "stream": True,
        "fake_reply": "a b c d e f g h",
        "fake_chunk_delay": 0.5,
    }
    async with usage_stack.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as answer:
        request_id = answer.headers["x-request-id"]
        async for _ in answer.aiter_bytes():
            break  # read the first event, then hang up
    for _ in range(100):  # the hub notices the hang-up at its next write
        if rows := await usage_stack.rows(request_id):
            break
        await asyncio.sleep(0.1)
    (row,) = rows
    assert row.error_type == "client_disconnected" and row.status_code == 499
    assert row.ttft_ms is not None and row.total_tokens is None


async def test_a_client_that_leaves_before_the_first_byte_is_recorded(usage_stack: UsageStack) -> None:
    body = {"model": "llamacpp", "messages": CHAT, "fake_fault": "latency=30"}
    request_id = "req_left_before_the_head"
    async with usage_stack.http() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                "/v1/chat/completions", json=body, headers={"x-request-id": request_id}, timeout=1.0
            )
    (row,) = await usage_stack.rows(request_id)
    assert row.error_type == "client_disconnected" and row.status_code == 499
    assert row.ttft_ms is None and row.total_tokens is None and row.latency_ms >= 900


async def test_an_async_job_is_in_the_usage_report(usage_stack: UsageStack) -> None:
    body = {"model": "llamacpp", "messages": CHAT, "fake_reply": "one two three", "async": True}
    async with usage_stack.http() as http:
        queued = await http.post("/v1/chat/completions", json=body)
        assert queued.status_code == 202, queued.text
        job = (await http.get(f"/v1/jobs/{queued.json()['id']}", params={"wait": 20})).json()
        assert job["status"] == "PROCESSED", job
        await usage_stack.hub.hub.usage.flush()
        usage = (await http.get("/v1/usage", params={"days": 1})).json()
    (row,) = [r for r in usage["data"] if r["model"] == "llamacpp"]
    assert row["requests"] == 1 and row["errors"] == 0 and row["total_tokens"] == 7
