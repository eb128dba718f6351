from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from inference_club import __version__
from inference_club.agent.heartbeat import Heartbeat, HeartbeatAnswer, backoff_delay
from inference_club.agent.runner import AgentRunner
from inference_club.domain.heartbeat import HeartbeatBody
from tests.polling import eventually

from .stubs import EngineStub, FakeHub, make_config


async def constant_body() -> HeartbeatBody:
    return HeartbeatBody(name="rig", transport="direct", version="x", services=[], health={})


def test_backoff_delay_is_exponential_jittered_and_capped() -> None:
    top = [backoff_delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6, 7, 50)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(3, rng=lambda: 0.0) == 2.0
    assert all(0.5 <= backoff_delay(1) <= 1.0 for _ in range(50))
    assert all(backoff_delay(n) <= 30.0 for n in range(1, 200))


def test_answer_parsing() -> None:
    answer = HeartbeatAnswer.from_json(
        {
            "provider_id": "prov_1",
            "online": True,
            "interval_s": 30,
            "online_window_s": 60,
            "agent_secret": "abc",
        }
    )
    assert answer == HeartbeatAnswer("prov_1", True, 30.0, 60.0, "abc")
    assert HeartbeatAnswer.from_json({"interval_s": "x"}).interval_s is None


async def test_retries_with_growing_backoff_until_the_hub_answers(
    fake_hub: tuple[FakeHub, str],
) -> None:
    fake, base = fake_hub
    fake.fail_statuses = [503, 502, 500, 503]
    answers: list[HeartbeatAnswer] = []
    beat = Heartbeat(
        url=f"{base}/api/inference/agent/heartbeat/",
        key="ic-key",
        build_body=constant_body,
        on_answer=answers.append,
        base_backoff_s=0.04,
        max_backoff_s=0.3,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(beat.run(stop))
    try:
        async with asyncio.timeout(5):
            await beat.registered.wait()
    finally:
        stop.set()
        async with asyncio.timeout(2):
            await task
        await beat.aclose()
    assert len(fake.times) == 5
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    # jittered within [d/2, d] for d = 0.04, 0.08, 0.16, 0.3 (capped)
    assert gaps[0] >= 0.018
    assert gaps[3] >= 0.14
    assert gaps[3] > gaps[0]
    assert beat.failures == 0
    assert answers and answers[0].agent_secret == "s3cret-1"
    assert fake.auth[-1] == "Bearer ic-key"


async def test_refused_key_is_logged_clearly_once(
    fake_hub: tuple[FakeHub, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inference_club.agent.heartbeat")
    fake, base = fake_hub
    fake.fail_statuses = [401] * 100
    beat = Heartbeat(
        url=f"{base}/api/inference/agent/heartbeat/",
        key="bad",
        build_body=constant_body,
        base_backoff_s=0.01,
        max_backoff_s=0.02,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(beat.run(stop))
    await eventually(lambda: len(fake.times) >= 4)
    stop.set()
    async with asyncio.timeout(2):
        await task
    await beat.aclose()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "the hub refused the key" in errors[0].getMessage()
    assert not beat.registered.is_set()


async def test_unreachable_hub_does_not_block_stop() -> None:
    beat = Heartbeat(
        url="http://127.0.0.1:9/api/inference/agent/heartbeat/",
        key="k",
        build_body=constant_body,
        base_backoff_s=5,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(beat.run(stop))
    await eventually(lambda: beat.failures >= 1)
    started = time.monotonic()
    stop.set()
    async with asyncio.timeout(2):
        await task
    assert time.monotonic() - started < 1
    await beat.aclose()


async def test_runner_heartbeat_body_secret_and_model_changes(
    fake_hub: tuple[FakeHub, str], engine_stub: tuple[EngineStub, str]
) -> None:
    fake, hub_base = fake_hub
    stub, engine_base = engine_stub
    config = make_config(
        [
            {
                "type": "llm",
                "url": f"{engine_base}/v1",
                "max_concurrency": 2,
                "models": [{"id": "declared", "features": ["tools"], "context_length": 8192}],
            },
            {"type": "tts", "url": "http://127.0.0.1:9/v1", "discover": False},
        ],
        hub=hub_base,
    )
    async with AgentRunner(config, report_gpus=False) as runner:
        await fake.wait_beats(1)
        body = fake.beats[0]
        assert set(body) == {"name", "transport", "callback_url", "version", "services", "health"}
        assert body["name"] == "rig"
        assert body["transport"] == "direct"
        assert body["callback_url"] == runner.callback_url
        assert body["version"] == __version__
        assert body["services"] == [
            {
                "type": "llm",
                "engine": "openai",
                "max_concurrency": 2,
                "models": [
                    {"id": "declared", "context_length": 8192, "features": ["tools"]},
                    {"id": "m1"},
                ],
            },
            {"type": "tts", "engine": "openai", "max_concurrency": 4, "models": []},
        ]
        health = body["health"]
        assert health["in_flight"] == 0
        assert health["cpu_count"] and "load" in health and "memory" in health
        assert [(s["type"], s["reachable"], s["in_flight"]) for s in health["services"]] == [
            ("llm", True, 0),
            ("tts", False, 0),
        ]
        assert fake.auth[0] == "Bearer ic-key"

        # the secret from the answer opens the direct transport
        async with httpx.AsyncClient(base_url=runner.callback_url or "") as client:
            ok = await client.post(
                "/relay/llm/v1/chat/completions",
                headers={"x-ic-agent-secret": "s3cret-1", "x-ic-model": "m1"},
                content=b"{}",
            )
            assert ok.status_code == 200

            # a new model on the engine: heartbeat right after discovery sees it
            stub.models.append("fresh")
            await runner.discovery.refresh()
            await fake.wait_beats(2, timeout=2)
            assert {"id": "fresh"} in fake.beats[1]["services"][0]["models"]

            # the hub rotates the secret: the latest one is the only one accepted
            fake.secret = "s3cret-2"
            runner.heartbeat.poke()
            await fake.wait_beats(3, timeout=2)
            await eventually(
                lambda: (
                    runner.heartbeat.last_answer is not None
                    and runner.heartbeat.last_answer.agent_secret == "s3cret-2"
                )
            )
            old = await client.post(
                "/relay/llm/v1/chat/completions",
                headers={"x-ic-agent-secret": "s3cret-1", "x-ic-model": "m1"},
                content=b"{}",
            )
            new = await client.post(
                "/relay/llm/v1/chat/completions",
                headers={"x-ic-agent-secret": "s3cret-2", "x-ic-model": "fresh"},
                content=b"{}",
            )
            assert (old.status_code, new.status_code) == (401, 200)
