"""ComfyUI through hub + agent + a ComfyUI stub: images, video, progress, cancel, errors."""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from inference_club.testing.fake_media import mp4_boxes, png_bytes, png_size
from inference_club.testing.stubs.comfyui import ComfyState, create_comfyui
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack, wait_for, wait_job

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "comfyui-txt2img.json"

VIDEO_WORKFLOW = {
    "workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 64, "length": 25, "batch_size": 1},
        },
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 4}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}},
        "5": {"class_type": "VHS_VideoCombine", "inputs": {"filename_prefix": "clip", "frame_rate": 24}},
    },
    "inputs": {
        "prompt": "4.text",
        "image": "1.image",
        "frames": "2.length",
        "seed": "3.seed",
        "fps": "5.frame_rate",
    },
}


def workflows(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "txt2img.json")
    (folder / "img2video.json").write_bytes(orjson.dumps(VIDEO_WORKFLOW))
    # a workflow without its input mapping is skipped with a clear message; the others are served
    (folder / "broken.json").write_bytes(orjson.dumps({"workflow": VIDEO_WORKFLOW["workflow"]}))
    return folder


@pytest.fixture(params=["direct", "tunnel"])
async def comfy(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EngineStack, ComfyState]]:
    state = ComfyState()
    state.control.step_delay_s = 0.02
    folder = workflows(tmp_path)
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_comfyui(state),
            {
                "type": "image",
                "engine": "comfyui",
                "workflows": str(folder),
                "timeout": 3,
                "poll_interval": 0.1,
            },
            transport=request.param,
            extra_services=[
                {
                    "type": "video",
                    "engine": "comfyui",
                    "workflows": str(folder),
                    "timeout": 3,
                    "poll_interval": 0.1,
                }
            ],
        ) as stack:
            yield stack, state


async def test_models_are_the_workflows_and_images_are_generated(
    comfy: tuple[EngineStack, ComfyState], caplog: pytest.LogCaptureFixture
) -> None:
    stack, state = comfy
    async with stack.http() as http:
        models = {m["id"] for m in (await http.get("/v1/models")).json()["data"]}
        assert {"txt2img", "img2video"} <= models and "broken" not in models
        client = openai.AsyncOpenAI(base_url=f"{stack.hub.base_url}/v1", api_key=stack.key, max_retries=0)
        answer = await client.images.generate(
            model="txt2img",
            prompt="a red fox",
            size="64x48",
            n=2,
            extra_body={"seed": 42, "negative_prompt": "blurry"},
        )
        assert answer.data and len(answer.data) == 2
        for item in answer.data:
            assert item.url is not None
            image = await http.get(item.url)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert png_size(image.content) == (64, 48)
    sent = next(b for b in state.control.bodies if isinstance(b, dict) and "prompt" in b and "client_id" in b)
    graph = sent["prompt"]
    assert graph["6"]["inputs"]["text"] == "a red fox" and graph["7"]["inputs"]["text"] == "blurry"
    assert graph["3"]["inputs"]["seed"] == 42
    assert (
        graph["5"]["inputs"]["width"],
        graph["5"]["inputs"]["height"],
        graph["5"]["inputs"]["batch_size"],
    ) == (64, 48, 2)


async def test_async_job_reports_progress_then_lands_its_file(comfy: tuple[EngineStack, ComfyState]) -> None:
    stack, state = comfy
    state.control.hold_at = 4  # the sampler waits before step 4 until progress was seen on the job
    async with stack.http() as http:
        submitted = await http.post(
            "/v1/images/generations",
            json={"model": "txt2img", "prompt": "a lighthouse", "steps": 6, "async": True},
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        events = asyncio.create_task(job_events(stack, job_id))
        seen: list[dict[str, Any]] = []
        for _ in range(600):
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            if job.get("progress"):
                seen.append(job["progress"])
            if any("step" in p["stage"] for p in seen) or job["status"] not in ("QUEUED", "PROCESSING"):
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "PROCESSING", job
        progress = seen[-1]
        assert progress["stage"] in {f"node 3: step {i}/6" for i in (1, 2, 3)}
        assert 0 < progress["value"] <= 0.5
        state.control.release.set()
        job = await wait_job(http, job_id)
        assert job["status"] == "PROCESSED", job
        image = await http.get(job["result"]["data"][0]["url"])
        assert image.headers["content-type"] == "image/png"
    # the job's event stream carried the progress too
    async with asyncio.timeout(30):
        streamed = await events
    assert any(e.get("progress") and "step" in e["progress"]["stage"] for e in streamed)
    assert streamed[-1]["status"] == "PROCESSED"


async def job_events(stack: EngineStack, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with stack.http() as http, http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                found.append(orjson.loads(line[6:]))
    return found


async def test_video_from_an_uploaded_first_frame(comfy: tuple[EngineStack, ComfyState]) -> None:
    stack, state = comfy
    frame_png = png_bytes(8, 8)
    frame = "data:image/png;base64," + base64.b64encode(frame_png).decode()
    async with stack.http() as http:
        answer = await http.post(
            "/v1/videos/generations",
            json={"model": "img2video", "prompt": "waves", "image": frame, "duration": 2, "fps": 12},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "video/mp4"
        assert "ftyp" in mp4_boxes(answer.content)
        stored = await http.get(answer.headers["x-file-url"])
        assert stored.status_code == 200 and stored.headers["content-type"] == "video/mp4"
    assert list(state.uploads.values()) == [frame_png]
    sent = [b for b in state.control.bodies if isinstance(b, dict) and "client_id" in b][-1]["prompt"]
    assert sent["1"]["inputs"]["image"] in state.uploads
    assert sent["2"]["inputs"]["length"] == 24 and sent["5"]["inputs"]["frame_rate"] == 12


async def test_cancel_reaches_comfyui_interrupt(comfy: tuple[EngineStack, ComfyState]) -> None:
    stack, state = comfy
    state.control.gate = asyncio.Event()
    async with stack.http() as http:
        job_id = (
            await http.post(
                "/v1/images/generations", json={"model": "txt2img", "prompt": "slow", "async": True}
            )
        ).json()["id"]
        await wait_for(lambda: state.running is not None, what="the prompt to run")
        canceled = await http.post(f"/v1/jobs/{job_id}/cancel")
        assert canceled.status_code == 200
        await wait_for(
            lambda: state.control.interrupts >= 1 and state.control.cancelled, what="the interrupt"
        )
        running = state.running
        assert running is not None and running in state.interrupted
        assert {"prompt_id": running} in state.control.bodies
        assert running in state.control.cancelled  # also taken off ComfyUI's queue
        state.control.gate.set()
        job = await wait_job(http, job_id)
        assert job["status"] == "CANCELED"


async def test_engine_errors_map_to_the_documented_types(comfy: tuple[EngineStack, ComfyState]) -> None:
    stack, state = comfy
    async with stack.http() as http:
        # an execution error on the engine: upstream_error
        state.control.fail = "CUDA out of memory"
        failed = await http.post("/v1/images/generations", json={"model": "txt2img", "prompt": "x"})
        assert failed.status_code == 502
        assert failed.json()["error"]["type"] == "upstream_error"
        assert "CUDA out of memory" in failed.json()["error"]["message"]
        # an unknown workflow is a client error
        missing = await http.post("/v1/images/generations", json={"model": "img2video", "prompt": "x"})
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "image"


@pytest.mark.slow
async def test_an_engine_that_stops_answering_fails_the_job_and_the_agent_goes_on(
    comfy: tuple[EngineStack, ComfyState],
) -> None:
    stack, state = comfy
    async with stack.http() as http:
        state.control.hang = True
        job_id = (
            await http.post(
                "/v1/images/generations", json={"model": "txt2img", "prompt": "stuck", "async": True}
            )
        ).json()["id"]
        job = await wait_job(http, job_id, timeout=30)
        assert job["status"] == "FAILED", job
        assert job["error"]["type"] == "upstream_error"
        assert state.control.interrupts >= 1  # the timeout interrupted the engine too
        state.control.hang = False
        for task in list(state.tasks):
            task.cancel()
        state.running = None
        answer = await http.post("/v1/images/generations", json={"model": "txt2img", "prompt": "again"})
        assert answer.status_code == 200, answer.text
    assert stack.agent.relay.in_flight == 0
