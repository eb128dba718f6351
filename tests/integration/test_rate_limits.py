"""Per-key request limits: headers on every answer, 429 rate_limited with Retry-After past it."""

from __future__ import annotations

from pathlib import Path

import httpx

from inference_club.services.ratelimit import RequestLimiter
from tests.conftest import make_settings, running_hub

BODY = {"model": "nobody-serves-this", "messages": [{"role": "user", "content": "hi"}]}


async def test_limit_per_key(tmp_path: Path) -> None:
    async with running_hub(make_settings(tmp_path / "data", rate_limit_rpm=3)) as hub:
        alice = await hub.new_user("alice")
        bob = await hub.new_user("bob")
        async with httpx.AsyncClient(base_url=hub.base_url) as http:
            auth = {"Authorization": f"Bearer {alice}"}
            async with httpx.AsyncClient(base_url=hub.base_url) as other:
                await other.post(
                    "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {bob}"}
                )
            statuses = [
                (await http.post("/v1/chat/completions", json=BODY, headers=auth)).status_code
                for _ in range(3)
            ]
            assert statuses == [404, 404, 404]  # counted even when nothing serves the model
            limited = await http.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=auth)
            assert limited.status_code == 429
            assert limited.json()["error"]["type"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["x-ratelimit-remaining-requests"] == "0"
            # Bob's key has its own allowance; reading jobs or models is not limited.
            assert (await http.get("/v1/models", headers=auth)).status_code == 200


async def test_headers_on_success(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    from tests.integration.conftest import engine_server, run_agent, services_for

    async with (
        running_hub(make_settings(tmp_path / "data", rate_limit_rpm=60)) as hub,
        AsyncExitStack() as exits,
    ):
        key = await hub.new_user("alice")
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            ok = await http.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            )
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-limit-requests"] == "60"
            assert ok.headers["x-ratelimit-remaining-requests"] == "59"
            assert ok.headers["x-ratelimit-reset-requests"].endswith("s")


def test_bucket_refills() -> None:
    limiter = RequestLimiter(rpm=600)  # one request every 0.1 s
    for _ in range(600):
        limiter.take("k")
    import time

    import pytest

    from inference_club.errors import RateLimited

    with pytest.raises(RateLimited):
        limiter.take("k")
    time.sleep(0.12)
    state = limiter.take("k")
    assert state is not None and state.remaining == 0
    assert RequestLimiter(rpm=0).take("k") is None


async def test_token_limit_in_process(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    from tests.integration.conftest import engine_server, run_agent, services_for

    async with (
        running_hub(make_settings(tmp_path / "data", rate_limit_tpm=5)) as hub,
        AsyncExitStack() as exits,
    ):
        key = await hub.new_user("alice")
        other = await hub.new_user("bob")
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            ok = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": [{"role": "user", "content": "a story of many words please"}],
                },
            )
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-limit-tokens"] == "5"
            assert ok.json()["usage"]["total_tokens"] >= 5
            limited = await http.post("/v1/chat/completions", json=BODY)
            assert limited.status_code == 429
            assert limited.json()["error"]["type"] == "rate_limited"
            assert "tokens per minute" in limited.json()["error"]["message"]
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["x-ratelimit-remaining-tokens"] == "0"
            # Bob has spent nothing.
            assert (
                await http.post(
                    "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {other}"}
                )
            ).status_code == 404


def test_token_budget_overdraft_is_capped_at_a_minute() -> None:
    from inference_club.services.ratelimit import TokenBudget

    budget = TokenBudget(tpm=600)  # ten tokens a second
    found = budget.check("k")
    assert found is not None and found[1] == 0 and found[0].remaining == 600
    budget.spend("k", 100_000)
    found = budget.check("k")
    assert found is not None
    window, wait = found
    assert window.remaining <= 0
    assert 60 <= wait <= 61  # overdrawn by one minute's worth at most
    assert TokenBudget(tpm=0).check("k") is None
