"""ComfyUI adapter: workflow files, request → workflow inputs, and whole prompts against the
ComfyUI stub on loopback (WebSocket progress, history polling, uploads, cancel, errors)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from inference_club.agent.adapters import adapter_for
from inference_club.agent.adapters.base import AdapterConfigError, EngineFailed, EngineRejected
from inference_club.agent.adapters.comfyui import (
    ComfyUIAdapter,
    _b64,
    _Events,
    _prompt_error,
    _status_message,
    load_workflow,
    load_workflows,
)
from inference_club.testing.fake_media import mp4_boxes, png_bytes, png_size
from inference_club.testing.servers import free_port
from inference_club.testing.stubs.comfyui import ComfyState, create_comfyui
from tests.polling import eventually

from .rig import Reports, StubHost, form_call, json_call, module_loop, service

EXAMPLE = Path(__file__).resolve().parents[4] / "docs" / "examples" / "comfyui-txt2img.json"

EDIT_WORKFLOW = {
    "workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "VAEEncode", "inputs": {}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}},
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": "edit"}},
    },
    "inputs": {"prompt": "4.text", "image": "1.image", "seed": "3.seed"},
}
VIDEO_WORKFLOW = {
    "workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 25}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}},
        "5": {"class_type": "VHS_VideoCombine", "inputs": {"filename_prefix": "clip", "frame_rate": 24}},
    },
    "inputs": {"prompt": "4.text", "image": "1.image", "frames": "2.length", "fps": "5.frame_rate"},
}
MYSTERY_WORKFLOW = {
    "workflow": {"1": {"class_type": "MysteryNode", "inputs": {"text": ""}}},
    "inputs": {"prompt": "1.text"},
}


def workflow_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "txt2img.json").write_bytes(EXAMPLE.read_bytes())
    for name, doc in (("edit", EDIT_WORKFLOW), ("img2video", VIDEO_WORKFLOW), ("mystery", MYSTERY_WORKFLOW)):
        (folder / f"{name}.json").write_bytes(orjson.dumps(doc))
    return folder


@pytest_asyncio.fixture(loop_scope="module")
async def comfy(stub_host: StubHost, tmp_path: Path) -> AsyncIterator[tuple[ComfyUIAdapter, ComfyState]]:
    state = ComfyState()
    state.control.step_delay_s = 0.001
    async with stub_host.adapter(
        create_comfyui(state),
        engine="comfyui",
        workflows=str(workflow_folder(tmp_path)),
        poll_interval_s=0.01,
    ) as adapter:
        assert isinstance(adapter, ComfyUIAdapter)
        yield adapter, state
    if state.control.gate is not None:
        state.control.gate.set()


def graph_sent(state: ComfyState) -> dict[str, Any]:
    prompts = [b["prompt"] for b in state.control.bodies if isinstance(b, dict) and "client_id" in b]
    assert prompts, "no prompt was queued"
    graph: dict[str, Any] = prompts[-1]
    return graph


def images_of(body: bytes) -> list[bytes]:
    return [base64.b64decode(item["b64_json"]) for item in orjson.loads(body)["data"]]


# --------------------------------------------------------------------------- against the stub


@module_loop
async def test_workflows_are_the_models_of_a_reachable_engine(
    comfy: tuple[ComfyUIAdapter, ComfyState],
) -> None:
    adapter, state = comfy
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert listing.reachable and listing.models is not None
    assert sorted(m.id for m in listing.models) == ["edit", "img2video", "mystery", "txt2img"]
    assert state.control.paths() == ["/system_stats"]


@module_loop
async def test_txt2img_fills_the_workflow_and_reports_sampler_progress(
    comfy: tuple[ComfyUIAdapter, ComfyState],
) -> None:
    adapter, state = comfy
    reports = Reports()
    answer = await adapter.run(
        json_call(
            "/v1/images/generations",
            {"prompt": "a fox", "size": "48x32", "n": 2, "seed": 5, "steps": 3},
            model="txt2img",
            report=reports,
        )
    )
    graph = graph_sent(state)
    assert graph["6"]["inputs"]["text"] == "a fox" and graph["3"]["inputs"]["seed"] == 5
    assert graph["5"]["inputs"] == {"width": 48, "height": 32, "batch_size": 2}
    assert [png_size(image) for image in images_of(answer.body)] == [(48, 32), (48, 32)]
    assert reports[:2] == [(0.0, "queued"), (0.0, "running")]
    assert [r for r in reports if "step" in r[1]] == [
        (1 / 3, "node 3: step 1/3"),
        (2 / 3, "node 3: step 2/3"),
        (1.0, "node 3: step 3/3"),
    ]


@module_loop
async def test_an_edit_uploads_the_image_into_the_workflow(comfy: tuple[ComfyUIAdapter, ComfyState]) -> None:
    adapter, state = comfy
    source = png_bytes(8, 8, seed=9)
    answer = await adapter.run(
        form_call(
            "/v1/images/edits",
            {"prompt": "add a hat"},
            {"image": ("cat.png", source, "image/png")},
            model="edit",
        )
    )
    [(name, uploaded)] = state.uploads.items()
    assert uploaded == source and name.startswith("ic-") and name.endswith("-cat.png")
    assert graph_sent(state)["1"]["inputs"]["image"] == name
    assert len(images_of(answer.body)) == 1


@module_loop
async def test_a_video_starts_from_a_base64_frame(comfy: tuple[ComfyUIAdapter, ComfyState]) -> None:
    adapter, state = comfy
    frame = "data:image/png;base64," + base64.b64encode(png_bytes(8, 8)).decode()
    answer = await adapter.run(
        json_call(
            "/v1/videos/generations",
            {"prompt": "waves", "image": frame, "duration": 2, "fps": 12},
            model="img2video",
        )
    )
    graph = graph_sent(state)
    assert graph["2"]["inputs"]["length"] == 24 and graph["5"]["inputs"]["frame_rate"] == 12
    assert answer.content_type == "video/mp4" and "ftyp" in mp4_boxes(answer.body)


@module_loop
@pytest.mark.parametrize(
    ("route", "body", "model", "message", "status"),
    [
        ("/v1/images/generations", {"prompt": "x"}, "nope", "no ComfyUI workflow named 'nope'", 404),
        ("/v1/videos/generations", {"prompt": "x"}, "img2video", "needs an input image", 400),
        ("/v1/images/generations", {"n": 1}, "txt2img", "'prompt' is required", 400),
        ("/v1/videos/generations", {"prompt": "x", "image": "!!"}, "img2video", "data URI or base64", 400),
    ],
)
async def test_bad_requests_never_reach_the_engine(
    comfy: tuple[ComfyUIAdapter, ComfyState],
    route: str,
    body: dict[str, Any],
    model: str,
    message: str,
    status: int,
) -> None:
    adapter, state = comfy
    with pytest.raises(EngineRejected, match=message) as info:
        await adapter.run(json_call(route, body, model=model))
    assert info.value.status == status and state.control.calls == []


@module_loop
async def test_an_edit_without_an_image_is_refused(comfy: tuple[ComfyUIAdapter, ComfyState]) -> None:
    adapter, _ = comfy
    with pytest.raises(EngineRejected, match="'image' is required"):
        await adapter.run(form_call("/v1/images/edits", {"prompt": "x"}, model="edit"))


@module_loop
async def test_a_workflow_the_engine_refuses_is_a_client_error(
    comfy: tuple[ComfyUIAdapter, ComfyState],
) -> None:
    adapter, _ = comfy
    with pytest.raises(EngineRejected, match="refused the workflow: Cannot execute because node MysteryNode"):
        await adapter.run(json_call("/v1/images/generations", {"prompt": "x"}, model="mystery"))


@module_loop
async def test_a_failing_node_is_an_upstream_error(comfy: tuple[ComfyUIAdapter, ComfyState]) -> None:
    adapter, state = comfy
    state.control.fail = "CUDA out of memory"
    with pytest.raises(EngineFailed, match=r"failed in node 3 \(KSampler\): CUDA out of memory"):
        await adapter.run(json_call("/v1/images/generations", {"prompt": "x", "steps": 1}, model="txt2img"))


@module_loop
async def test_cancel_interrupts_and_dequeues_the_prompt(comfy: tuple[ComfyUIAdapter, ComfyState]) -> None:
    adapter, state = comfy
    state.control.gate = asyncio.Event()
    reports = Reports()
    run = asyncio.create_task(
        adapter.run(json_call("/v1/images/generations", {"prompt": "x"}, model="txt2img", report=reports))
    )
    # Running as the adapter saw it: it has read the prompt's id and can interrupt it.
    await eventually(lambda: "running" in reports.stages())
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):  # a lost cancel would follow the held prompt forever
            await run
    prompt_id = state.running
    assert prompt_id is not None
    assert {"prompt_id": prompt_id} in state.control.bodies and state.control.cancelled == [prompt_id]
    assert state.control.interrupts == 1


@module_loop
async def test_cancel_while_the_prompt_is_being_queued_deletes_it(
    comfy: tuple[ComfyUIAdapter, ComfyState],
) -> None:
    """ComfyUI queues a prompt before it answers: a cancel in between must not leave it queued."""
    adapter, state = comfy
    state.answer_delay_s = 0.3
    try:
        run = asyncio.create_task(
            adapter.run(json_call("/v1/images/generations", {"prompt": "x"}, model="txt2img"))
        )
        await eventually(lambda: bool(state.submitted), what="the prompt queued on the engine")
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await run
        assert state.control.cancelled == [state.submitted[-1]]
    finally:
        state.answer_delay_s = 0.0


@module_loop
async def test_without_a_websocket_the_history_is_polled(stub_host: StubHost, tmp_path: Path) -> None:
    """A proxy in front of ComfyUI that refuses WebSockets: the prompt still completes."""
    state = ComfyState()
    state.control.step_delay_s = 0.001
    stub = create_comfyui(state)

    async def no_websockets(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await stub(scope, receive, send)

    async with stub_host.adapter(
        no_websockets, engine="comfyui", workflows=str(workflow_folder(tmp_path)), poll_interval_s=0.01
    ) as adapter:
        reports = Reports()
        answer = await adapter.run(
            json_call("/v1/images/generations", {"prompt": "x", "steps": 2}, model="txt2img", report=reports)
        )
    assert len(images_of(answer.body)) == 1 and reports == [(0.0, "queued")]
    assert any(path.startswith("/history/") for path in state.control.paths())


@module_loop
async def test_a_failure_seen_in_the_history_is_an_upstream_error(
    stub_host: StubHost, tmp_path: Path
) -> None:
    state = ComfyState()
    state.control.step_delay_s = 0.001
    state.control.fail = "sampler exploded"
    stub = create_comfyui(state)

    async def no_websockets(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await stub(scope, receive, send)

    async with stub_host.adapter(
        no_websockets, engine="comfyui", workflows=str(workflow_folder(tmp_path)), poll_interval_s=0.01
    ) as adapter:
        with pytest.raises(EngineFailed, match="ComfyUI failed the prompt: sampler exploded"):
            await adapter.run(json_call("/v1/images/generations", {"prompt": "x"}, model="txt2img"))


@module_loop
async def test_an_untyped_download_takes_its_type_from_the_output_format(
    stub_host: StubHost, tmp_path: Path
) -> None:
    """A proxy that answers /view as octet-stream: the video's declared format decides."""
    state = ComfyState()
    state.control.step_delay_s = 0.001
    stub = create_comfyui(state)

    async def untyped_view(scope: Any, receive: Any, send: Any) -> None:
        async def relabel(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and scope["path"] == "/view":
                headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-type"]
                message = {**message, "headers": [*headers, (b"content-type", b"application/octet-stream")]}
            await send(message)

        await stub(scope, receive, relabel if scope["type"] == "http" else send)

    frame = base64.b64encode(png_bytes(8, 8)).decode()
    async with stub_host.adapter(
        untyped_view,
        engine="comfyui",
        type="video",
        workflows=str(workflow_folder(tmp_path)),
        poll_interval_s=0.01,
    ) as adapter:
        answer = await adapter.run(
            json_call("/v1/videos/generations", {"prompt": "x", "image": frame}, model="img2video")
        )
    assert answer.content_type == "video/mp4"  # from "video/h264-mp4"


async def test_events_without_a_server_just_wait() -> None:
    async with _Events(f"ws://127.0.0.1:{free_port()}/ws?clientId=x", {}) as events:
        assert await events.next(timeout=0.01) is None


async def test_an_unreachable_engine_is_an_upstream_error(tmp_path: Path) -> None:
    adapter = adapter_for(
        service(
            engine="comfyui", url=f"http://127.0.0.1:{free_port()}", workflows=str(workflow_folder(tmp_path))
        )
    )
    assert isinstance(adapter, ComfyUIAdapter)
    async with httpx.AsyncClient(trust_env=False) as client:
        adapter.bind(client)
        with pytest.raises(EngineFailed, match="comfyui server is unreachable"):
            await adapter.run(json_call("/v1/images/generations", {"prompt": "x"}, model="txt2img"))
        listing = await adapter.list_models(client, timeout=2)
    assert not listing.reachable and listing.models is None


# --------------------------------------------------------------------------- workflow files


def write(path: Path, doc: Any) -> Path:
    path.write_bytes(orjson.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"inputs": {"prompt": "6.text"}}, 'expected an object with a "workflow"'),
        ({"workflow": {"1": {"inputs": {}}}, "inputs": {"prompt": "1.text"}}, "not in API format"),
        ({"workflow": {"1": {"class_type": "X", "inputs": {}}}}, 'missing the "inputs" mapping'),
        (
            {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "inputs": {"seed": "1.seed"}},
            'no "prompt" entry',
        ),
        (
            {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "inputs": {"prompt": "2.text"}},
            "no node '2'",
        ),
        (
            {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "inputs": {"prompt": "1text"}},
            "NODE_ID.INPUT_NAME",
        ),
        (
            {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "inputs": {"prompt": "1.t", "cfg": "1.c"}},
            "inputs.cfg: unknown field",
        ),
    ],
)
def test_workflow_files_name_what_is_wrong(tmp_path: Path, doc: Any, fragment: str) -> None:
    with pytest.raises(AdapterConfigError, match=r"bad\.json") as info:
        load_workflow(write(tmp_path / "bad.json", doc))
    assert fragment in str(info.value)


async def test_comfyui_fills_the_mapped_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "txt2img.json").write_bytes(EXAMPLE.read_bytes())
    write(folder / "broken.json", {"workflow": {}})
    adapter = adapter_for(service(engine="comfyui", workflows=str(folder)))
    assert isinstance(adapter, ComfyUIAdapter) and list(adapter.workflows) == ["txt2img"]
    workflow = adapter.workflows["txt2img"]
    values, wanted = await adapter._values(
        json_call(
            "/v1/images/generations", {"prompt": "fox", "size": "640x480", "n": 3, "seed": 5, "steps": 9}
        ),
        workflow,
    )
    graph = workflow.fill(values)
    assert graph["6"]["inputs"]["text"] == "fox" and graph["7"]["inputs"]["text"] == "text, watermark"
    assert (
        graph["5"]["inputs"]["width"],
        graph["5"]["inputs"]["height"],
        graph["5"]["inputs"]["batch_size"],
    ) == (640, 480, 3)
    assert (graph["3"]["inputs"]["seed"], graph["3"]["inputs"]["steps"], wanted) == (5, 9, 3)
    assert (
        json.loads(EXAMPLE.read_text())["workflow"]["6"]["inputs"]["text"] != "fox"
    )  # the file is untouched
    with pytest.raises(EngineRejected, match="takes no input image"):
        await adapter._values(json_call("/v1/videos/generations", {"prompt": "x", "image": "aGk="}), workflow)
    with pytest.raises(EngineRejected, match="'size'"):
        await adapter._values(json_call("/v1/images/generations", {"prompt": "x", "size": "huge"}), workflow)


def test_a_folder_keeps_the_good_workflows_and_names_the_bad(tmp_path: Path) -> None:
    folder = workflow_folder(tmp_path)
    write(folder / "outputs.json", {**MYSTERY_WORKFLOW, "outputs": ["9"]})
    (folder / "garbled.json").write_text("{oops")
    (folder / "adir.json").mkdir()
    (folder / "notes.txt").write_text("not a workflow")
    found, problems = load_workflows(folder)
    assert sorted(found) == ["edit", "img2video", "mystery", "txt2img"]
    assert found["txt2img"].outputs == ("9",) and found["edit"].outputs == ()
    assert found["edit"].inputs["image"] == ("1", "image")
    assert len(problems) == 3
    assert any("adir.json: cannot read" in p for p in problems)
    assert any("garbled.json: invalid JSON" in p for p in problems)
    assert any("outputs.json: outputs: expected a list of node ids" in p for p in problems)


def test_a_folder_without_usable_workflows_is_said_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    write(folder / "bad.json", {"workflow": {}})
    adapter = adapter_for(service(engine="comfyui", workflows=str(folder)))
    assert isinstance(adapter, ComfyUIAdapter) and adapter.workflows == {}
    assert "bad.json" in caplog.text and "no usable workflow" in caplog.text


def test_fill_skips_unmapped_and_missing_values() -> None:
    workflow = load_workflow(EXAMPLE)
    graph = workflow.fill({"prompt": "p", "seed": None, "fps": 30})
    assert graph["6"]["inputs"]["text"] == "p"
    assert graph["3"]["inputs"]["seed"] == workflow.graph["3"]["inputs"]["seed"]


def test_engine_error_texts() -> None:
    refused = httpx.Response(
        400,
        json={
            "error": {"message": "Prompt outputs failed validation"},
            "node_errors": {"1": {"errors": [{"message": "Value not in list", "details": "image: 'x.png'"}]}},
        },
    )
    assert (
        _prompt_error(refused)
        == "Prompt outputs failed validation; node 1: Value not in list: image: 'x.png'"
    )
    assert _prompt_error(httpx.Response(400, text="bad gateway")) == "bad gateway"
    assert _prompt_error(httpx.Response(400, json={"error": "short"})) == "short"
    assert _prompt_error(httpx.Response(400, json={})) == "invalid prompt"
    status = {"messages": [["execution_start", {}], ["execution_error", {"exception_message": "OOM"}]]}
    assert _status_message(status) == "OOM"
    assert _status_message({}) == "execution error"


def test_b64_accepts_data_uris_and_plain_base64() -> None:
    assert _b64("aGk=", "image") == b"hi"
    assert _b64("data:image/png;base64,aGk=", "image") == b"hi"
    with pytest.raises(EngineRejected, match="'image' must be a data URI or base64"):
        _b64("not base64!", "image")
