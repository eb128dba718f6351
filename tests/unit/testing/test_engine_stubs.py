"""The engine stubs answer in the shapes the engines publish (tests/fixtures/engines/)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from inference_club.testing.fake_media import png_bytes, wav_bytes
from inference_club.testing.servers import serve_app
from inference_club.testing.stubs.a1111 import A1111State, create_a1111
from inference_club.testing.stubs.acestep import AceStepState, create_acestep
from inference_club.testing.stubs.comfyui import ComfyState, create_comfyui
from inference_club.testing.stubs.dia import DiaState, create_dia
from inference_club.testing.stubs.hunyuan3d import Hunyuan3DState, create_hunyuan3d
from inference_club.testing.stubs.trellis import TrellisState, create_trellis
from inference_club.testing.stubs.whispercpp import WhisperState, create_whispercpp

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "engines"
EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "comfyui-txt2img.json"


def published(name: str) -> Any:
    doc = json.loads((FIXTURES / name).read_text())
    assert doc["source"], f"{name} names no source"
    return doc["response"]


def assert_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Every key of ``expected`` is in ``actual`` with the same JSON type (lists: first items)."""
    if expected is None:
        return  # published as null: any value (or null) is fine
    if isinstance(expected, bool):
        assert isinstance(actual, bool), f"{where}: expected a boolean, got {actual!r}"
    elif isinstance(expected, int | float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), f"{where}: expected a number"
    elif isinstance(expected, str):
        assert isinstance(actual, str), f"{where}: expected a string, got {actual!r}"
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if expected and actual:
            assert_shape(actual[0], expected[0], f"{where}[0]")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: missing key {key!r}"
            assert_shape(actual[key], value, f"{where}.{key}")


def assert_keyed_shape(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Objects keyed by an id (ComfyUI history): compare the first entries."""
    assert len(actual) == 1
    assert_shape(next(iter(actual.values())), next(iter(expected.values())))


async def poll(http: httpx.AsyncClient, path: str, done: Any) -> Any:
    for _ in range(500):
        status = (await http.get(path)).json()
        if done(status):
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never finished")


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(app, shutdown_timeout_s=0.5) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield http


async def test_comfyui_stub_matches_comfyui() -> None:
    state = ComfyState()
    state.control.step_delay_s = 0.01
    graph = json.loads(EXAMPLE.read_text())["workflow"]
    graph["3"]["inputs"]["steps"] = 3
    async with served(create_comfyui(state)) as http:
        upload = await http.post(
            "/upload/image",
            files={"image": ("example.png", png_bytes(2, 2), "image/png")},
            data={"type": "input"},
        )
        assert_shape(upload.json(), published("comfyui/upload_image.json"))
        bad = {**graph, "10": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}}
        refused = await http.post("/prompt", json={"prompt": bad})
        assert refused.status_code == 400
        assert_shape(refused.json(), published("comfyui/prompt_error.json"))
        ws_url = str(http.base_url).replace("http://", "ws://") + "/ws?clientId=abc"
        async with websockets.connect(ws_url) as ws:
            answer = await http.post("/prompt", json={"prompt": graph, "client_id": "abc"})
            assert answer.status_code == 200
            assert_shape(answer.json(), published("comfyui/prompt_response.json"))
            prompt_id = answer.json()["prompt_id"]
            kinds: dict[str, dict[str, Any]] = {}
            while True:
                async with asyncio.timeout(5):
                    message = json.loads(await ws.recv())
                kinds.setdefault(message["type"], message)
                if message["type"] == "executing" and message["data"]["node"] is None:
                    break
        assert_shape(kinds["progress"], published("comfyui/ws_progress.json"))
        assert_shape(message, published("comfyui/ws_executing_done.json"))
        history = (await http.get(f"/history/{prompt_id}")).json()
        assert_keyed_shape(history, published("comfyui/history.json"))
        image = history[prompt_id]["outputs"]["9"]["images"][0]
        view = await http.get(
            "/view", params={"filename": image["filename"], "subfolder": "", "type": "output"}
        )
        assert view.status_code == 200 and view.headers["content-type"] == "image/png"
        assert (await http.post("/interrupt")).status_code == 200


async def test_a1111_stub_matches_a1111() -> None:
    state = A1111State()
    state.control.step_delay_s = 0.01
    async with served(create_a1111(state)) as http:
        models = (await http.get("/sdapi/v1/sd-models")).json()
        assert_shape(models, published("a1111/sd_models.json"))
        answer = await http.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 2})
        assert_shape(answer.json(), published("a1111/txt2img_response.json"))
        assert_shape((await http.get("/sdapi/v1/progress")).json(), published("a1111/progress.json"))
        invalid = await http.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": "many"})
        assert invalid.status_code == 422
        assert_shape(invalid.json(), published("a1111/validation_error.json"))


async def test_acestep_stub_matches_the_api_docs() -> None:
    state = AceStepState()
    state.control.step_delay_s = 0.01
    async with served(create_acestep(state)) as http:
        submitted = await http.post(
            "/release_task", json={"prompt": "upbeat pop song", "lyrics": "Hello world"}
        )
        assert_shape(submitted.json(), published("acestep/release_task.json"))
        task_id = submitted.json()["data"]["task_id"]
        while True:
            result = (await http.post("/query_result", json={"task_id_list": [task_id]})).json()
            if result["data"][0]["status"] != 0:
                break
            await asyncio.sleep(0.02)
        assert_shape(result, published("acestep/query_result.json"))
        expected_item = json.loads(published("acestep/query_result.json")["data"][0]["result"])[0]
        item = json.loads(result["data"][0]["result"])[0]
        assert_shape(item, expected_item)
        audio = await http.get(item["file"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        assert_shape((await http.get("/v1/models")).json(), published("acestep/models.json"))
        assert_shape((await http.get("/v1/stats")).json(), published("acestep/stats.json"))


async def test_whispercpp_stub_matches_whispercpp() -> None:
    async with served(create_whispercpp(WhisperState())) as http:
        audio = {"file": ("a.wav", wav_bytes(0.1), "audio/wav")}
        assert_shape((await http.post("/inference", files=audio)).json(), published("whispercpp/json.json"))
        verbose = await http.post("/inference", files=audio, data={"response_format": "verbose_json"})
        assert_shape(verbose.json(), published("whispercpp/verbose_json.json"))
        missing = await http.post("/inference", data={"response_format": "json"}, files={"x": ("x", b"x")})
        assert missing.status_code == 400
        assert_shape(missing.json(), published("whispercpp/error.json"))


async def test_dia_stub_matches_dia_tts_server() -> None:
    async with served(create_dia(DiaState())) as http:
        upload = await http.post(
            "/upload_reference", files={"files": ("speaker.wav", wav_bytes(0.1), "audio/wav")}
        )
        assert_shape(upload.json(), published("dia/upload_reference.json"))
        request = json.loads((FIXTURES / "dia/tts_request.json").read_text())
        answer = await http.post("/tts", json=request["request"])
        assert answer.status_code == 200
        assert answer.headers["content-type"] == request["response"]["content_type"]


async def test_hunyuan3d_stub_matches_the_api_server() -> None:
    state = Hunyuan3DState()
    state.control.step_delay_s = 0.01
    async with served(create_hunyuan3d(state)) as http:
        image = base64.b64encode(png_bytes(2, 2)).decode()
        sent = await http.post("/send", json={"image": image})
        assert_shape(sent.json(), published("hunyuan3d/send.json"))
        uid = sent.json()["uid"]
        first = (await http.get(f"/status/{uid}")).json()
        assert_shape(first, published("hunyuan3d/status_processing.json"))
        status = await poll(http, f"/status/{uid}", lambda s: s["status"] != "processing")
        assert_shape(status, published("hunyuan3d/status_completed.json"))
        error = await http.post("/generate", json={})
        assert error.status_code == 404
        assert_shape(error.json(), published("hunyuan3d/generate_error.json"))


async def test_trellis_stub_matches_trellis_api() -> None:
    state = TrellisState()
    state.control.step_delay_s = 0.01
    async with served(create_trellis(state)) as http:
        files = {"file": ("in.png", png_bytes(2, 2), "image/png")}
        converted = await http.post("/api/convert", files=files, params={"seed": 3})
        assert_shape(converted.json(), published("trellis/convert.json"))
        job_id = converted.json()["job_id"]
        status = await poll(http, f"/api/status/{job_id}", lambda s: s["status"] == "completed")
        assert_shape(status, published("trellis/status_completed.json"))
        glb = await http.get(status["download_url"])
        assert glb.headers["content-type"] == "model/gltf-binary"
        again = (await http.post("/api/convert", files=files)).json()["job_id"]
        assert_shape((await http.delete(f"/api/jobs/{again}")).json(), published("trellis/cancel.json"))
