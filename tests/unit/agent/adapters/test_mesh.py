"""3D adapters against the Hunyuan3D-2 and TRELLIS stubs on loopback: inputs from JSON or
multipart, submit and poll to the GLB, cancel (TRELLIS), refusals and failures; GLB counts."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
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

from inference_club.agent.adapters.base import EngineFailed, EngineRejected
from inference_club.agent.adapters.mesh import Hunyuan3DAdapter, TrellisAdapter, glb_stats
from inference_club.testing.fake_media import glb_bytes, png_bytes
from inference_club.testing.servers import free_port
from inference_club.testing.stubs.hunyuan3d import Hunyuan3DState, create_hunyuan3d
from inference_club.testing.stubs.trellis import TrellisState, create_trellis

from .rig import Reports, StubHost, form_call, json_call, module_loop, service

ROUTE = "/v1/3d/generations"
IMAGE = png_bytes(8, 8, seed=4)
DATA_URI = "data:image/png;base64," + base64.b64encode(IMAGE).decode()


@pytest_asyncio.fixture(loop_scope="module")
async def hunyuan(stub_host: StubHost) -> AsyncIterator[tuple[Hunyuan3DAdapter, Hunyuan3DState]]:
    state = Hunyuan3DState()
    state.control.steps, state.control.step_delay_s = 1, 0.001
    async with stub_host.adapter(
        create_hunyuan3d(state), engine="hunyuan3d", type="mesh", poll_interval_s=0.005
    ) as adapter:
        assert isinstance(adapter, Hunyuan3DAdapter)
        yield adapter, state


@pytest_asyncio.fixture(loop_scope="module")
async def trellis(stub_host: StubHost) -> AsyncIterator[tuple[TrellisAdapter, TrellisState]]:
    state = TrellisState()
    state.control.steps, state.control.step_delay_s = 1, 0.001
    async with stub_host.adapter(
        create_trellis(state), engine="trellis", type="mesh", poll_interval_s=0.005
    ) as adapter:
        assert isinstance(adapter, TrellisAdapter)
        yield adapter, state
    if state.control.gate is not None:
        state.control.gate.set()


def mesh_of(answer_body: bytes) -> dict[str, Any]:
    doc = orjson.loads(answer_body)
    assert isinstance(doc["created"], int) and len(doc["data"]) == 1
    item: dict[str, Any] = doc["data"][0]
    assert isinstance(item["seconds"], float) and item["seconds"] >= 0
    return item


# --------------------------------------------------------------------------- Hunyuan3D-2


@module_loop
async def test_hunyuan_sends_the_image_and_answers_the_glb(
    hunyuan: tuple[Hunyuan3DAdapter, Hunyuan3DState],
) -> None:
    adapter, state = hunyuan
    reports = Reports()
    answer = await adapter.run(
        json_call(
            ROUTE,
            {"image": DATA_URI, "seed": 42, "texture": True, "steps": "8", "octree_resolution": 128},
            report=reports,
        )
    )
    sent = state.control.bodies[-1]
    assert sent == {
        "seed": 42,
        "texture": True,
        "image": base64.b64encode(IMAGE).decode(),
        "num_inference_steps": 8,
        "octree_resolution": 128,
    }
    item = mesh_of(answer.body)
    assert base64.b64decode(item["b64_json"]) == glb_bytes(seed=42)
    assert (item["seed"], item["vertices"], item["faces"]) == (42, 3, 1)
    assert set(reports.stages()) == {"generating"} and answer.content_type == "application/json"


@module_loop
async def test_hunyuan_takes_a_text_prompt_or_a_multipart_image(
    hunyuan: tuple[Hunyuan3DAdapter, Hunyuan3DState],
) -> None:
    adapter, state = hunyuan
    answer = await adapter.run(json_call(ROUTE, {"prompt": "a teapot"}))
    assert state.control.bodies[-1] == {"seed": 1234, "texture": False, "text": "a teapot"}
    assert mesh_of(answer.body)["seed"] == 1234
    await adapter.run(
        form_call(ROUTE, {"prompt": "ignored", "texture": "1"}, {"image": ("in.png", IMAGE, "image/png")})
    )
    sent = state.control.bodies[-1]
    assert base64.b64decode(sent["image"]) == IMAGE and "text" not in sent and sent["texture"] is True


@module_loop
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"seed": 1}, r"'image' \(or 'prompt'\) is required"),
        ({"image": "data:image/png;base64,***"}, "'image' must be a data URI or base64"),
        ({"prompt": "x", "steps": "many"}, "'steps' must be an integer"),
        ({"prompt": "x", "seed": True}, "'seed' must be an integer"),
    ],
)
async def test_hunyuan_refuses_bad_requests_before_the_engine(
    hunyuan: tuple[Hunyuan3DAdapter, Hunyuan3DState], body: dict[str, Any], message: str
) -> None:
    adapter, state = hunyuan
    with pytest.raises(EngineRejected, match=message):
        await adapter.run(json_call(ROUTE, body))
    assert state.control.calls == []


@module_loop
async def test_hunyuan_is_up_when_it_answers_anything(
    hunyuan: tuple[Hunyuan3DAdapter, Hunyuan3DState],
) -> None:
    adapter, _ = hunyuan
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert (listing.reachable, listing.models) == (True, ())


async def test_hunyuan_down() -> None:
    adapter = Hunyuan3DAdapter(
        service(type="mesh", engine="hunyuan3d", url=f"http://127.0.0.1:{free_port()}")
    )
    async with httpx.AsyncClient(trust_env=False) as client:
        listing = await adapter.list_models(client, timeout=2)
        adapter.bind(client)
        with pytest.raises(EngineFailed, match="hunyuan3d server is unreachable"):
            await adapter.run(json_call(ROUTE, {"prompt": "x"}))
    assert not listing.reachable and listing.models is None


def hunyuan_answering(status: dict[str, Any], send: dict[str, Any] | None = None) -> Starlette:
    """A Hunyuan3D look-alike: ``/send`` answers ``send``, every status call ``status``."""

    async def send_route(request: Request) -> JSONResponse:
        return JSONResponse(send if send is not None else {"uid": "u1"})

    async def status_route(request: Request) -> JSONResponse:
        return JSONResponse(status)

    return Starlette(
        routes=[Route("/send", send_route, methods=["POST"]), Route("/status/{uid}", status_route)]
    )


@module_loop
@pytest.mark.parametrize(
    ("app", "message"),
    [
        (hunyuan_answering({"status": "processing"}, send={"error": "busy"}), "answered /send without a uid"),
        (hunyuan_answering({"status": "error"}), "reported status 'error'"),
        (hunyuan_answering({"status": "completed"}), "completed without model_base64"),
        (hunyuan_answering({"status": "completed", "model_base64": "%%%"}), "sent invalid base64"),
        (
            hunyuan_answering(
                {"status": "completed", "model_base64": base64.b64encode(b"not a glb").decode()}
            ),
            "not a GLB file",
        ),
    ],
)
async def test_hunyuan_answers_that_make_no_mesh(stub_host: StubHost, app: Starlette, message: str) -> None:
    async with stub_host.adapter(app, engine="hunyuan3d", type="mesh", poll_interval_s=0.001) as adapter:
        with pytest.raises(EngineFailed, match=message):
            await adapter.run(json_call(ROUTE, {"prompt": "a teapot"}))


# --------------------------------------------------------------------------- TRELLIS


@module_loop
async def test_trellis_converts_the_image_and_answers_the_glb(
    trellis: tuple[TrellisAdapter, TrellisState],
) -> None:
    adapter, state = trellis
    reports = Reports()
    answer = await adapter.run(
        form_call(ROUTE, {"seed": "9"}, {"image": ("in.png", IMAGE, "image/png")}, report=reports)
    )
    assert state.control.bodies[0] == {"seed": 9}
    item = mesh_of(answer.body)
    assert base64.b64decode(item["b64_json"]) == glb_bytes(seed=9)
    assert (item["seed"], item["vertices"], item["faces"]) == (9, 3, 1)
    assert reports[0] == (0.0, "pending") and reports[-1] == (0.95, "downloading")
    [job_id] = [p.rsplit("/", 1)[-1] for p in state.control.paths() if p.startswith("/api/download/")]
    assert state.control.cancelled == [] and job_id


@module_loop
async def test_trellis_takes_a_json_image_and_a_default_seed(
    trellis: tuple[TrellisAdapter, TrellisState],
) -> None:
    adapter, state = trellis
    answer = await adapter.run(json_call(ROUTE, {"image": base64.b64encode(IMAGE).decode()}))
    assert state.control.bodies[0] == {"seed": 1} and mesh_of(answer.body)["seed"] == 1


@module_loop
async def test_trellis_needs_an_image(trellis: tuple[TrellisAdapter, TrellisState]) -> None:
    adapter, state = trellis
    with pytest.raises(EngineRejected, match="needs an 'image'") as info:
        await adapter.run(json_call(ROUTE, {"prompt": "a teapot"}))
    assert info.value.param == "image" and state.control.calls == []


@module_loop
async def test_a_failed_trellis_job_is_an_upstream_error(
    trellis: tuple[TrellisAdapter, TrellisState],
) -> None:
    adapter, state = trellis
    state.control.fail = "no object found"
    with pytest.raises(EngineFailed, match="TRELLIS failed the job: no object found"):
        await adapter.run(json_call(ROUTE, {"image": DATA_URI}))


@module_loop
async def test_cancel_deletes_the_trellis_job(trellis: tuple[TrellisAdapter, TrellisState]) -> None:
    adapter, state = trellis
    state.control.gate = asyncio.Event()
    run = asyncio.create_task(adapter.run(json_call(ROUTE, {"image": DATA_URI})))
    async with asyncio.timeout(5):
        await state.control.started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert len(state.control.cancelled) == 1 and state.jobs == {}  # the one job is gone


@module_loop
async def test_trellis_health_is_the_listing(trellis: tuple[TrellisAdapter, TrellisState]) -> None:
    adapter, _ = trellis
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert (listing.reachable, listing.models) == (True, ())


# --------------------------------------------------------------------------- GLB counts


def glb(document: Any, *, chunk_type: bytes = b"JSON", raw: bytes | None = None) -> bytes:
    chunk = raw if raw is not None else json.dumps(document).encode()
    chunk += b" " * (-len(chunk) % 4)
    total = 12 + 8 + len(chunk)
    return b"glTF" + struct.pack("<II", 2, total) + struct.pack("<I", len(chunk)) + chunk_type + chunk


def test_glb_stats_counts_vertices_and_faces() -> None:
    assert glb_stats(glb_bytes(seed=3)) == (3, 1)
    with pytest.raises(EngineFailed, match="not a GLB"):
        glb_stats(b"nope" * 10)


def test_glb_faces_come_from_indices_when_there_are_some() -> None:
    document = {
        "accessors": [{"count": 4}, {"count": 6}, {"count": 9}, {"count": "many"}],
        "meshes": [
            {"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]},
            {"primitives": [{"attributes": {"POSITION": 2}}, {"attributes": {"POSITION": 3}}]},
            {"primitives": [{"attributes": {"POSITION": 7}}]},  # no such accessor
        ],
    }
    assert glb_stats(glb(document)) == (4 + 9, 2 + 3)
    assert glb_stats(glb({})) == (0, 0)


def test_a_broken_glb_is_the_engine_failing() -> None:
    with pytest.raises(EngineFailed, match="has no JSON chunk"):
        glb_stats(glb({}, chunk_type=b"BIN\x00"))
    with pytest.raises(EngineFailed, match="has no JSON chunk"):
        glb_stats(glb({"asset": {}})[:-4])  # shorter than its chunk says
    with pytest.raises(EngineFailed, match="invalid JSON chunk"):
        glb_stats(glb(None, raw=b"{not json"))
