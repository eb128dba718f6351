"""AUTOMATIC1111 through hub + agent + an A1111 stub: txt2img, img2img with mask, progress,
interrupt, errors, an engine that stops answering."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from inference_club.testing.fake_media import png_bytes, png_size
from inference_club.testing.stubs.a1111 import A1111State, create_a1111
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack, wait_for, wait_job


@pytest.fixture
async def a1111(tmp_path: Path) -> AsyncIterator[tuple[EngineStack, A1111State]]:
    state = A1111State()
    state.control.step_delay_s = 0.02
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_a1111(state),
            {"type": "image", "engine": "a1111", "timeout": 3, "poll_interval": 0.05},
        ) as stack:
            yield stack, state


async def test_checkpoints_are_models_and_txt2img_lands_png_files(
    a1111: tuple[EngineStack, A1111State],
) -> None:
    stack, state = a1111
    async with stack.http() as http:
        models = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
        assert {"v1-5-pruned-emaonly", "sdxl_base_1.0"} <= set(models)
        assert models["sdxl_base_1.0"]["engine"]["name"] == "a1111"
        assert models["sdxl_base_1.0"]["engine"]["reachable"] is True
        client = openai.AsyncOpenAI(base_url=f"{stack.hub.base_url}/v1", api_key=stack.key, max_retries=0)
        answer = await client.images.generate(
            model="sdxl_base_1.0", prompt="a cat", size="64x32", n=2, extra_body={"seed": 7, "steps": 3}
        )
        assert answer.data and len(answer.data) == 2
        image = await http.get(answer.data[0].url or "")
        assert image.headers["content-type"] == "image/png" and png_size(image.content) == (64, 32)
    sent = next(
        b
        for m, p in state.control.calls
        if p == "/sdapi/v1/txt2img"
        for b in state.control.bodies
        if isinstance(b, dict) and b.get("prompt") == "a cat"
    )
    assert sent["override_settings"] == {"sd_model_checkpoint": "sdxl_base_1.0.safetensors [31e35c80fc]"}
    assert (sent["width"], sent["height"], sent["batch_size"], sent["seed"], sent["steps"]) == (
        64,
        32,
        2,
        7,
        3,
    )


async def test_edit_sends_init_image_and_mask(a1111: tuple[EngineStack, A1111State]) -> None:
    stack, state = a1111
    source, mask = png_bytes(16, 16, seed=1), png_bytes(16, 16, seed=2)
    async with stack.http() as http:
        answer = await http.post(
            "/v1/images/edits",
            data={"model": "v1-5-pruned-emaonly", "prompt": "add a hat", "strength": "0.4", "size": "32x32"},
            files={"image": ("in.png", source, "image/png"), "mask": ("m.png", mask, "image/png")},
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]) == 1
    sent = [b for b in state.control.bodies if isinstance(b, dict) and "init_images" in b][-1]
    assert base64.b64decode(sent["init_images"][0]) == source and base64.b64decode(sent["mask"]) == mask
    assert sent["denoising_strength"] == 0.4


async def test_progress_on_an_async_job_and_interrupt_on_cancel(
    a1111: tuple[EngineStack, A1111State],
) -> None:
    stack, state = a1111
    state.control.steps = 8
    state.control.hold_at = 3  # the generation waits before step 3 (progress 2/8 shows meanwhile)
    async with stack.http() as http:
        job_id = (
            await http.post(
                "/v1/images/generations", json={"model": "v1-5-pruned-emaonly", "prompt": "p", "async": True}
            )
        ).json()["id"]
        progress = None
        for _ in range(600):
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            if job.get("progress") and job["progress"]["value"] > 0:
                progress = job["progress"]
                break
            await asyncio.sleep(0.05)
        assert progress is not None
        assert (progress["value"], progress["stage"]) in {(0.125, "step 1/8"), (0.25, "step 2/8")}
        assert (await http.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
        await wait_for(lambda: state.control.interrupts == 1, what="the interrupt")
        state.control.release.set()
        assert (await wait_job(http, job_id))["status"] == "CANCELED"


@pytest.mark.slow
async def test_engine_errors_and_a_silent_engine(a1111: tuple[EngineStack, A1111State]) -> None:
    stack, state = a1111
    async with stack.http() as http:
        state.control.fail = "NansException: A tensor with all NaNs"
        failed = await http.post("/v1/images/generations", json={"model": "sdxl_base_1.0", "prompt": "x"})
        assert failed.status_code == 502 and failed.json()["error"]["type"] == "upstream_error"
        assert "NaNs" in failed.json()["error"]["message"]
        bad = await http.post(
            "/v1/images/generations", json={"model": "sdxl_base_1.0", "prompt": "x", "size": "big"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"
        state.control.hang = True
        job_id = (
            await http.post(
                "/v1/images/generations", json={"model": "sdxl_base_1.0", "prompt": "stuck", "async": True}
            )
        ).json()["id"]
        job = await wait_job(http, job_id)
        assert job["status"] == "FAILED" and job["error"]["type"] == "upstream_error"
        assert state.control.interrupts >= 1
        state.control.hang = False
        ok = await http.post("/v1/images/generations", json={"model": "sdxl_base_1.0", "prompt": "again"})
        assert ok.status_code == 200, ok.text
