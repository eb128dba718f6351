"""AUTOMATIC1111 adapter against the A1111 stub on loopback: checkpoints as models, txt2img and
img2img payloads, progress from ``/sdapi/v1/progress``, interrupt on cancel, engine errors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inference_club.agent.adapters.a1111 import A1111Adapter, _detail
from inference_club.agent.adapters.base import EngineFailed, EngineRejected
from inference_club.testing.fake_media import png_bytes, png_size
from inference_club.testing.servers import free_port
from inference_club.testing.stubs.a1111 import A1111State, create_a1111
from tests.polling import eventually

from .rig import Reports, StubHost, form_call, json_call, module_loop, service

SDXL_TITLE = "sdxl_base_1.0.safetensors [31e35c80fc]"


@pytest_asyncio.fixture(loop_scope="module")
async def a1111(stub_host: StubHost) -> AsyncIterator[tuple[A1111Adapter, A1111State]]:
    state = A1111State()
    state.control.step_delay_s = 0.001
    async with stub_host.adapter(create_a1111(state), engine="a1111", poll_interval_s=0.01) as adapter:
        assert isinstance(adapter, A1111Adapter)
        yield adapter, state
        state.control.release.set()


def sent(state: A1111State, mode: str) -> dict[str, Any]:
    """The last generation body the stub received for ``mode`` (txt2img or img2img)."""
    bodies = [
        b for b in state.control.bodies if isinstance(b, dict) and ("init_images" in b) == (mode == "img2img")
    ]
    assert bodies, f"nothing was sent to {mode}"
    body: dict[str, Any] = bodies[-1]
    return body


def test_a1111_payload() -> None:
    adapter = A1111Adapter(service())
    adapter.titles["sd15"] = "sd15.safetensors [abc]"
    payload = adapter._common({"prompt": "p", "model": "sd15", "size": "768x512", "n": 2, "seed": 3})
    assert payload["override_settings"] == {"sd_model_checkpoint": "sd15.safetensors [abc]"}
    assert (payload["width"], payload["height"], payload["batch_size"], payload["seed"]) == (768, 512, 2, 3)
    assert adapter._common({"prompt": "p"})["seed"] == -1
    with pytest.raises(EngineRejected, match="'prompt'"):
        adapter._common({})


def test_explicit_width_and_height_win_over_size_and_steps_pass_through() -> None:
    payload = A1111Adapter(service())._common(
        {"prompt": "p", "size": "768x512", "width": "100", "steps": 4, "negative_prompt": "blur"}
    )
    assert (payload["width"], payload["height"], payload["steps"]) == (100, 512, 4)
    assert payload["negative_prompt"] == "blur" and "override_settings" not in payload
    with pytest.raises(EngineRejected, match="'n' must be an integer"):
        A1111Adapter(service())._common({"prompt": "p", "n": "two"})


@module_loop
async def test_checkpoints_are_listed_by_model_name(a1111: tuple[A1111Adapter, A1111State]) -> None:
    adapter, _ = a1111
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert listing.reachable and listing.models is not None
    assert [m.id for m in listing.models] == ["v1-5-pruned-emaonly", "sdxl_base_1.0"]
    assert adapter.titles["sdxl_base_1.0"] == SDXL_TITLE


@module_loop
async def test_txt2img_sends_the_checkpoint_title_and_answers_openai_images(
    a1111: tuple[A1111Adapter, A1111State],
) -> None:
    adapter, state = a1111
    await adapter.list_models(adapter.client, timeout=2)
    answer = await adapter.run(
        json_call(
            "/v1/images/generations",
            {"prompt": "a cat", "model": "sdxl_base_1.0", "size": "48x32", "n": 2, "seed": 7, "steps": 2},
        )
    )
    body = sent(state, "txt2img")
    assert body["override_settings"] == {"sd_model_checkpoint": SDXL_TITLE}
    assert (body["width"], body["height"], body["batch_size"], body["seed"], body["steps"]) == (
        48,
        32,
        2,
        7,
        2,
    )
    doc = orjson.loads(answer.body)
    assert answer.content_type == "application/json" and isinstance(doc["created"], int)
    assert [png_size(base64.b64decode(d["b64_json"])) for d in doc["data"]] == [(48, 32), (48, 32)]


@module_loop
async def test_progress_is_read_from_the_engine_while_it_generates(
    a1111: tuple[A1111Adapter, A1111State],
) -> None:
    adapter, state = a1111
    state.control.hold_at = 2  # step 1 done, the job waits before step 2
    reports = Reports()
    run = asyncio.create_task(
        adapter.run(json_call("/v1/images/generations", {"prompt": "x", "steps": 3}, report=reports))
    )
    await eventually(lambda: (1 / 3, "step 1/3") in reports)
    state.control.release.set()
    await run
    assert reports[0] == (0.0, "queued")
    assert state.control.interrupts == 0


@module_loop
async def test_edit_sends_the_image_mask_and_strength(a1111: tuple[A1111Adapter, A1111State]) -> None:
    adapter, state = a1111
    source, mask = png_bytes(8, 8, seed=1), png_bytes(8, 8, seed=2)
    answer = await adapter.run(
        form_call(
            "/v1/images/edits",
            {"prompt": "add a hat", "strength": "0.4", "size": "16x16"},
            {"image": ("in.png", source, "image/png"), "mask": ("m.png", mask, "image/png")},
        )
    )
    body = sent(state, "img2img")
    assert base64.b64decode(body["init_images"][0]) == source and base64.b64decode(body["mask"]) == mask
    assert body["denoising_strength"] == 0.4 and body["prompt"] == "add a hat"
    assert len(orjson.loads(answer.body)["data"]) == 1

    await adapter.run(
        form_call("/v1/images/edits", {"prompt": "p"}, {"image[]": ("in.png", source, "image/png")})
    )
    body = sent(state, "img2img")
    assert body["denoising_strength"] == 0.75 and "mask" not in body


@module_loop
async def test_an_edit_without_an_image_never_reaches_the_engine(
    a1111: tuple[A1111Adapter, A1111State],
) -> None:
    adapter, state = a1111
    with pytest.raises(EngineRejected, match="'image' is required") as info:
        await adapter.run(form_call("/v1/images/edits", {"prompt": "p"}))
    assert info.value.param == "image" and state.control.calls == []


@module_loop
async def test_engine_validation_errors_are_client_errors(a1111: tuple[A1111Adapter, A1111State]) -> None:
    adapter, _ = a1111
    call = json_call("/v1/images/generations", {"prompt": "x"})
    with pytest.raises(EngineRejected, match="refused the parameters: width: value is not a valid integer"):
        await adapter._generate(call, "/sdapi/v1/txt2img", {"prompt": "x", "width": "wide"})


@module_loop
async def test_engine_failures_are_upstream_errors(a1111: tuple[A1111Adapter, A1111State]) -> None:
    adapter, state = a1111
    state.control.fail = "CUDA out of memory"
    with pytest.raises(EngineFailed, match=r"failed txt2img \(500\).*CUDA out of memory"):
        await adapter.run(json_call("/v1/images/generations", {"prompt": "x", "steps": 1}))
    with pytest.raises(EngineFailed, match="model 'nope' not found"):
        await adapter.run(json_call("/v1/images/generations", {"prompt": "x", "model": "nope", "steps": 1}))


@module_loop
async def test_cancel_interrupts_the_generation(a1111: tuple[A1111Adapter, A1111State]) -> None:
    adapter, state = a1111
    state.control.hold_at = 1
    run = asyncio.create_task(adapter.run(json_call("/v1/images/generations", {"prompt": "x", "steps": 2})))
    async with asyncio.timeout(5):
        await state.control.started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert state.control.interrupts == 1 and state.interrupted


async def test_an_unreachable_engine_is_an_upstream_error() -> None:
    adapter = A1111Adapter(service(url=f"http://127.0.0.1:{free_port()}"))
    async with httpx.AsyncClient(trust_env=False) as client:
        adapter.bind(client)
        with pytest.raises(EngineFailed, match="a1111 server is unreachable"):
            await adapter.run(json_call("/v1/images/generations", {"prompt": "x"}))
        listing = await adapter.list_models(client, timeout=2)
    assert not listing.reachable and listing.models is None


@module_loop
async def test_a_listing_without_checkpoints_is_unusable(stub_host: StubHost) -> None:
    async def not_a_list(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({"detail": "Not authenticated"})(scope, receive, send)

    async with stub_host.adapter(not_a_list, engine="a1111") as adapter:
        listing = await adapter.list_models(adapter.client, timeout=2)
    assert listing.reachable and listing.models is None
    assert listing.problem == f"no checkpoint list in the answer of {stub_host.url}/sdapi/v1/sd-models"


def test_validation_details_name_the_fields() -> None:
    doc = {
        "detail": [
            {"loc": ["body", "width"], "msg": "not an integer"},
            {"loc": ["body", "a", 0], "msg": "bad"},
        ]
    }
    assert _detail(httpx.Response(422, json=doc)) == "width: not an integer; a.0: bad"
    assert _detail(httpx.Response(422, json={"detail": "Checkpoint missing"})) == "Checkpoint missing"
    assert _detail(httpx.Response(422, text="plain words")) == "plain words"


def answering(images: Any) -> Starlette:
    """An A1111 look-alike whose generations answer ``{"images": images}``."""

    async def generate(request: Request) -> JSONResponse:
        return JSONResponse({"images": images, "parameters": {}, "info": "{}"})

    async def progress(request: Request) -> JSONResponse:
        return JSONResponse({"progress": 0.0, "state": {}})

    return Starlette(
        routes=[
            Route("/sdapi/v1/img2img", generate, methods=["POST"]),
            Route("/sdapi/v1/txt2img", generate, methods=["POST"]),
            Route("/sdapi/v1/progress", progress),
        ]
    )


@module_loop
async def test_only_the_generated_images_are_answered(stub_host: StubHost) -> None:
    """img2img with a mask may append the mask to the images: the batch size decides."""
    async with stub_host.adapter(answering(["Zmlyc3Q=", "bWFzaw=="]), engine="a1111") as adapter:
        answer = await adapter.run(
            form_call("/v1/images/edits", {"prompt": "p"}, {"image": ("in.png", b"png", "image/png")})
        )
    assert [item["b64_json"] for item in orjson.loads(answer.body)["data"]] == ["Zmlyc3Q="]


@module_loop
@pytest.mark.parametrize("images", [None, "Zmlyc3Q=", [1, 2]])
async def test_an_answer_without_images_is_an_upstream_error(stub_host: StubHost, images: Any) -> None:
    async with stub_host.adapter(answering(images), engine="a1111") as adapter:
        with pytest.raises(EngineFailed, match="answered without an images list"):
            await adapter.run(json_call("/v1/images/generations", {"prompt": "p"}))
