"""Executors: which one answers each endpoint, what a job keeps of an answer (JSON, stored
media), and the typed error an engine's failure becomes (with what a non-owner may read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from inference_club.domain.endpoints import BY_NAME, ENDPOINTS, AnswerKind
from inference_club.errors import AnswerTooLarge, UpstreamError, UpstreamStatus, UpstreamTimeout
from inference_club.services.executors import (
    EXECUTOR_CLASSES,
    ImagesExecutor,
    MediaExecutor,
    RelayExecutor,
    upstream_error,
)
from inference_club.testing.fake_engine import Fault
from tests.unit.services.hub_rig import Rig, hub_rig

CHAT = BY_NAME["chat.completions"]
SPEECH = BY_NAME["audio.speech"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with hub_rig(tmp_path, max_json_answer_bytes=4_000) as rig:
        yield rig


def test_every_answer_kind_has_its_executor(rig: Rig) -> None:
    executors = rig.hub.hub.executors
    assert set(EXECUTOR_CLASSES) == set(AnswerKind)
    for endpoint in ENDPOINTS:
        assert isinstance(executors.for_endpoint(endpoint), EXECUTOR_CLASSES[endpoint.answer])
    assert isinstance(executors.for_endpoint(CHAT), RelayExecutor)
    assert isinstance(executors.for_endpoint(SPEECH), MediaExecutor)
    assert isinstance(executors.for_endpoint(BY_NAME["images.generations"]), ImagesExecutor)
    assert executors.relay is executors.for_endpoint(BY_NAME["embeddings"])


async def test_a_job_keeps_the_whole_json_answer_even_when_streaming_was_asked(rig: Rig) -> None:
    _runner, engine = await rig.agent("rig", types=["llm"])
    call = rig.call(
        CHAT, {"model": "fake-chat", "stream": True, "messages": [{"role": "user", "content": "hi job"}]}
    )
    outcome = await rig.hub.hub.executors.for_endpoint(CHAT).collect(call, background=True)
    assert outcome.status == 200 and outcome.provider_id == rig.provider_id("rig")
    assert outcome.result["object"] == "chat.completion"
    assert "hi job" in outcome.result["choices"][0]["message"]["content"]
    assert engine.stats.requests["/v1/chat/completions"] == 1


async def test_a_media_answer_is_stored_as_a_file(rig: Rig) -> None:
    await rig.agent("rig", types=["tts"])
    call = rig.call(SPEECH, {"model": "fake-tts", "input": "hello", "voice": "alloy"})
    outcome = await rig.hub.hub.executors.for_endpoint(SPEECH).collect(call)
    (stored,) = outcome.files
    assert outcome.result["file_id"] == stored.id and outcome.result["bytes"] == stored.bytes > 0
    assert outcome.result["content_type"].startswith("audio/")
    assert outcome.result["url"].startswith(rig.hub.base_url)
    record = await rig.hub.hub.files.get(stored.id, user_id=rig.principal.user_id)
    assert record.bytes == stored.bytes


async def test_engine_errors_become_typed_errors_and_caps_hold(rig: Rig) -> None:
    _runner, engine = await rig.agent("rig", types=["llm"])
    executor = rig.hub.hub.executors.for_endpoint(CHAT)
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]}
    engine.add_fault(
        Fault(status=400, times=1, body={"error": {"message": "context too long", "type": "bad"}})
    )
    with pytest.raises(UpstreamStatus) as rejected:
        await executor.collect(rig.call(CHAT, body))
    assert rejected.value.status_code == 400 and "context too long" in str(rejected.value)
    engine.add_fault(Fault(status=200, times=1, body={"filler": "x" * 10_000}))
    with pytest.raises(AnswerTooLarge):
        await executor.collect(rig.call(CHAT, body))
    # The slots went back: the next call is served.
    assert (await executor.collect(rig.call(CHAT, body))).status == 200


def test_an_engines_raw_failure_is_for_its_owner_only() -> None:
    raw = b"Traceback (most recent call last): /home/gpu-box/secret.py"
    mine = upstream_error(500, raw, False, owner=True, request_id="req_1")
    theirs = upstream_error(500, raw, False, owner=False, request_id="req_1")
    assert isinstance(mine, UpstreamError) and "gpu-box" in str(mine)
    assert "gpu-box" not in str(theirs) and "req_1" in str(theirs)
    # An OpenAI-shaped 4xx is meant for the caller, whoever owns the provider.
    envelope = orjson.dumps({"error": {"message": "bad 'temperature'", "type": "invalid_request_error"}})
    passed = upstream_error(400, envelope, False, owner=False)
    assert isinstance(passed, UpstreamStatus) and passed.status_code == 400
    assert passed.body()["error"]["message"] == "bad 'temperature'"


@pytest.mark.parametrize(
    ("status", "raw", "kind", "fragment"),
    [
        (504, b"gateway timeout", UpstreamTimeout, "timed out"),
        (429, b"slow down", UpstreamStatus, "slow down"),
        (404, b"Not Found", UpstreamStatus, "does not serve /v1/responses"),
        (502, b"bad gateway", UpstreamError, "failed (502)"),
    ],
)
def test_upstream_statuses_map_to_the_hubs_errors(status: int, raw: bytes, kind: type, fragment: str) -> None:
    error = upstream_error(status, raw, False, path="/v1/responses")
    assert type(error) is kind and fragment in str(error)
