"""ACE-Step 1.5 through hub + agent + an ACE-Step stub: submit, poll, download, progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference_club.testing.fake_media import wav_duration
from inference_club.testing.stubs.acestep import AceStepState, create_acestep
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack, wait_job


@pytest.fixture
async def acestep(tmp_path: Path) -> AsyncIterator[tuple[EngineStack, AceStepState]]:
    state = AceStepState()
    state.control.step_delay_s = 0.02
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_acestep(state),
            {"type": "music", "engine": "acestep", "timeout": 3, "poll_interval": 0.05},
        ) as stack:
            yield stack, state


async def test_music_is_generated_with_lyrics_duration_and_seed(
    acestep: tuple[EngineStack, AceStepState],
) -> None:
    stack, state = acestep
    async with stack.http() as http:
        models = {m["id"] for m in (await http.get("/v1/models")).json()["data"]}
        assert {"acestep-v15-turbo", "acestep-v15-turbo-shift3"} <= models
        answer = await http.post(
            "/v1/music/generations",
            json={
                "model": "acestep-v15-turbo",
                "prompt": "lo-fi piano",
                "lyrics": "[verse]\nla la",
                "duration": 20,
                "seed": 99,
                "format": "wav",
                "bpm": 90,
                "key": "A minor",
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "audio/wav"
        assert wav_duration(answer.content) is not None
        stored = await http.get(answer.headers["x-file-url"])
        assert stored.headers["content-type"] == "audio/wav"
    task = next(b for b in state.control.bodies if isinstance(b, dict) and "audio_format" in b)
    assert task == {
        "prompt": "lo-fi piano",
        "lyrics": "[verse]\nla la",
        "audio_format": "wav",
        "batch_size": 1,
        "audio_duration": 20.0,
        "use_random_seed": False,
        "seed": 99,
        "bpm": 90,
        "key_scale": "A minor",
        "model": "acestep-v15-turbo",
    }


async def test_async_job_shows_progress_and_failures_map(acestep: tuple[EngineStack, AceStepState]) -> None:
    stack, state = acestep
    state.control.steps = 4
    state.control.hold_at = 2  # the task waits until the test saw it generating
    async with stack.http() as http:
        job_id = (
            await http.post(
                "/v1/music/generations", json={"model": "acestep-v15-turbo", "prompt": "p", "async": True}
            )
        ).json()["id"]
        stages: list[dict[str, Any]] = []
        for _ in range(600):
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            if job.get("progress"):
                stages.append(job["progress"])
            if any(s["stage"] == "generating" for s in stages) or (job["status"] != "PROCESSING" and stages):
                break
            await asyncio.sleep(0.05)
        assert any(s["stage"] == "generating" for s in stages), stages
        state.control.release.set()
        job = await wait_job(http, job_id)
        assert job["status"] == "PROCESSED", job
        assert job["result"]["content_type"] == "audio/mpeg"
        state.control.steps = 1
        state.control.fail = "LM failed to produce codes"
        failed = await http.post("/v1/music/generations", json={"model": "acestep-v15-turbo", "prompt": "p"})
        assert failed.status_code == 502 and "LM failed" in failed.json()["error"]["message"]
        refused = await http.post(
            "/v1/music/generations", json={"model": "acestep-v15-turbo", "prompt": "p", "duration": 5}
        )
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request"
        assert "audio_duration" in refused.json()["error"]["message"]


@pytest.mark.slow
async def test_a_silent_engine_fails_the_job_after_the_timeout(
    acestep: tuple[EngineStack, AceStepState],
) -> None:
    stack, state = acestep
    state.control.hang = True
    async with stack.http() as http:
        job_id = (
            await http.post(
                "/v1/music/generations", json={"model": "acestep-v15-turbo", "prompt": "p", "async": True}
            )
        ).json()["id"]
        job = await wait_job(http, job_id)
        assert job["status"] == "FAILED" and job["error"]["type"] == "upstream_error"
        assert "3s" in job["error"]["message"]
    assert stack.agent.relay.in_flight == 0
