"""ACE-Step adapter against the ACE-Step stub on loopback: the task it submits, polling to the
audio file, progress, and the engine's refusals and failures; its wrapper and result parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.responses import JSONResponse

from inference_club.agent.adapters.acestep import AceStepAdapter, _first_file, _result_error, _unwrap
from inference_club.agent.adapters.base import EngineFailed, EngineRejected
from inference_club.testing.fake_media import wav_bytes
from inference_club.testing.servers import free_port
from inference_club.testing.stubs.acestep import MODELS, AceStepState, create_acestep
from tests.polling import eventually

from .rig import Reports, StubHost, json_call, module_loop, service

ROUTE = "/v1/music/generations"


@pytest_asyncio.fixture(loop_scope="module")
async def acestep(stub_host: StubHost) -> AsyncIterator[tuple[AceStepAdapter, AceStepState]]:
    state = AceStepState()
    state.control.steps, state.control.step_delay_s = 2, 0.001
    async with stub_host.adapter(
        create_acestep(state), engine="acestep", type="music", poll_interval_s=0.005
    ) as adapter:
        assert isinstance(adapter, AceStepAdapter)
        yield adapter, state
        state.control.release.set()


def submitted(state: AceStepState) -> dict[str, Any]:
    bodies = [b for b in state.control.bodies if isinstance(b, dict) and "audio_format" in b]
    assert bodies, "no task was submitted"
    body: dict[str, Any] = bodies[-1]
    return body


@module_loop
async def test_models_are_listed_from_the_wrapped_answer(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, _ = acestep
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert listing.reachable and listing.models is not None
    assert [m.id for m in listing.models] == MODELS


@module_loop
async def test_a_request_becomes_a_task_and_the_answer_is_its_audio(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, state = acestep
    state.control.hold_at = 1  # the task runs until the test has seen it reported
    reports = Reports()
    run = asyncio.create_task(
        adapter.run(
            json_call(
                ROUTE,
                {
                    "prompt": "calm piano",
                    "lyrics": "[verse] la la",
                    "duration": 12,
                    "seed": 5,
                    "bpm": "96",
                    "key": "A minor",
                    "format": "wav",
                },
                model=MODELS[1],
                report=reports,
            )
        )
    )
    await eventually(lambda: "generating" in reports.stages())
    state.control.release.set()
    answer = await run
    assert submitted(state) == {
        "prompt": "calm piano",
        "lyrics": "[verse] la la",
        "audio_format": "wav",
        "batch_size": 1,
        "audio_duration": 12.0,
        "use_random_seed": False,
        "seed": 5,
        "bpm": 96,
        "key_scale": "A minor",
        "model": MODELS[1],
    }
    assert answer.content_type == "audio/wav" and answer.body == wav_bytes(1.0, seed=5)
    assert reports.stages()[0] == "queued" and reports.stages()[-1] == "downloading"
    assert all(0.0 <= value <= 0.97 for value, _ in reports)


@module_loop
async def test_defaults_a_random_seed_mp3_and_the_engine_default_model(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, state = acestep
    answer = await adapter.run(json_call(ROUTE, {"prompt": "drums"}, model=""))
    task = submitted(state)
    assert task["use_random_seed"] is True and task["audio_format"] == "mp3" and task["lyrics"] == ""
    assert not {"seed", "model", "audio_duration", "bpm", "key_scale"} & set(task)
    assert answer.content_type == "audio/mpeg"


@module_loop
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lyrics": "x"}, "'prompt' is required"),
        ({"prompt": "x", "format": "ogg"}, "'format' must be one of mp3, wav, flac"),
        ({"prompt": "x", "seed": "lucky"}, "'seed' must be an integer"),
    ],
)
async def test_bad_requests_never_reach_the_engine(
    acestep: tuple[AceStepAdapter, AceStepState], body: dict[str, Any], message: str
) -> None:
    adapter, state = acestep
    with pytest.raises(EngineRejected, match=message):
        await adapter.run(json_call(ROUTE, body))
    assert "/release_task" not in state.control.paths()


@module_loop
async def test_the_engine_refusing_the_task_is_a_client_error(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, _ = acestep
    with pytest.raises(EngineRejected, match="audio_duration must be between 10 and 600") as info:
        await adapter.run(json_call(ROUTE, {"prompt": "x", "duration": 3}, model=""))
    assert info.value.status == 400
    with pytest.raises(EngineRejected, match="Model not found: nope"):
        await adapter.run(json_call(ROUTE, {"prompt": "x"}, model="nope"))


@module_loop
async def test_a_failed_task_is_an_upstream_error_with_the_engine_words(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, state = acestep
    state.control.fail = "LM planner crashed"
    with pytest.raises(EngineFailed, match="ACE-Step failed the task: LM planner crashed"):
        await adapter.run(json_call(ROUTE, {"prompt": "x"}, model=""))
    with pytest.raises(EngineFailed, match="does not know task t-unknown"):
        await adapter._query("t-unknown")


@module_loop
async def test_the_progress_estimate_follows_the_engine_average(
    acestep: tuple[AceStepAdapter, AceStepState],
) -> None:
    adapter, state = acestep
    state.control.steps, state.control.step_delay_s = 4, 0.05
    assert await adapter._expected_seconds() == pytest.approx(0.2)


async def test_an_unreachable_engine() -> None:
    adapter = AceStepAdapter(service(type="music", engine="acestep", url=f"http://127.0.0.1:{free_port()}"))
    async with httpx.AsyncClient(trust_env=False) as client:
        adapter.bind(client)
        assert await adapter._expected_seconds() == 30.0  # the estimate falls back
        with pytest.raises(EngineFailed, match="acestep server is unreachable"):
            await adapter.run(json_call(ROUTE, {"prompt": "x"}))


def test_acestep_wrapper_and_files() -> None:
    assert _unwrap({"data": {"x": 1}, "code": 200, "error": None}) == {"x": 1}
    with pytest.raises(EngineFailed, match="queue is full"):
        _unwrap({"data": None, "code": 429, "error": "queue is full"})
    item = {"result": json.dumps([{"file": "/v1/audio?path=%2Ftmp%2Fa.mp3"}])}
    assert _first_file(item) == "/v1/audio?path=%2Ftmp%2Fa.mp3"
    with pytest.raises(EngineFailed, match="unexpected file URL"):
        _first_file({"result": json.dumps([{"file": "http://elsewhere/x.mp3"}])})


def test_the_wrapper_must_be_there() -> None:
    assert _unwrap({"data": [1], "code": None}) == [1]
    for doc in ([1], {"code": 200}, None):
        with pytest.raises(EngineFailed, match="without its data wrapper"):
            _unwrap(doc)
    with pytest.raises(EngineFailed, match="reported an error: 500"):
        _unwrap({"data": None, "code": 500})


def test_result_files_in_any_of_the_engine_shapes() -> None:
    # another host in the URL: only the server's own download route is followed
    as_dict = {"result": {"file": "http://0.0.0.0:8001/v1/audio?path=%2Fx.wav"}}
    assert _first_file(as_dict) == "/v1/audio?path=%2Fx.wav"
    for item in ({"result": "not json"}, {"result": json.dumps([{"file": ""}])}, {}):
        with pytest.raises(EngineFailed, match="without an audio file"):
            _first_file(item)
    with pytest.raises(EngineFailed, match="unexpected file URL"):
        _first_file({"result": [{"file": "/v1/audio?other=1"}]})


def test_result_errors_prefer_the_result_words() -> None:
    assert _result_error({"result": json.dumps([{"error": "OOM"}])}) == "OOM"
    assert _result_error({"result": [{"generation_info": "stopped"}]}) == "stopped"
    assert _result_error({"result": [], "error": "queue lost"}) == "queue lost"
    assert _result_error({}) == "no detail"


@module_loop
@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"data": None, "code": 500, "error": "boom"}, "invalid answer from"),
        ({"data": {"models": "all"}, "code": 200}, "no model list in the answer of"),
    ],
)
async def test_an_unusable_model_listing(stub_host: StubHost, doc: dict[str, Any], problem: str) -> None:
    async def engine(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse(doc)(scope, receive, send)

    async with stub_host.adapter(engine, engine="acestep", type="music") as adapter:
        listing = await adapter.list_models(adapter.client, timeout=2)
    assert listing.reachable and listing.models is None
    assert listing.problem == f"{problem} {stub_host.url}/v1/models"
