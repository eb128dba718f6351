"""whisper.cpp through hub + agent + a whisper.cpp stub: every response_format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from inference_club.testing.fake_media import wav_bytes
from inference_club.testing.stubs.whispercpp import WhisperState, create_whispercpp, transcript_for
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack


@pytest.fixture
async def whisper(tmp_path: Path) -> AsyncIterator[tuple[EngineStack, WhisperState]]:
    state = WhisperState()
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_whispercpp(state),
            {
                "type": "stt",
                "engine": "whispercpp",
                "timeout": 3,
                "models": [{"id": "whisper-base", "features": ["timestamps"]}],
            },
        ) as stack:
            yield stack, state


async def test_formats_map_to_openai_shapes(whisper: tuple[EngineStack, WhisperState]) -> None:
    stack, state = whisper
    audio = wav_bytes(0.5)
    expected = transcript_for(len(audio))
    client = openai.AsyncOpenAI(base_url=f"{stack.hub.base_url}/v1", api_key=stack.key, max_retries=0)
    plain = await client.audio.transcriptions.create(model="whisper-base", file=("a.wav", audio, "audio/wav"))
    assert plain.text == expected
    verbose = await client.audio.transcriptions.create(
        model="whisper-base",
        file=("a.wav", audio, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        temperature=0.2,
    )
    dumped = verbose.model_dump()
    assert dumped["text"] == expected and dumped["duration"] == 2.0 and dumped["language"] == "en"
    segment = dumped["segments"][0]
    assert {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    } <= set(segment)
    assert [w["word"] for w in dumped["words"]] == expected.split()
    fields = state.control.bodies[-1]
    assert fields["language"] == "en" and fields["temperature"] == "0.2"
    async with stack.http() as http:
        for fmt, start in (("text", expected), ("srt", "1\n00:00:00,000"), ("vtt", "WEBVTT")):
            answer = await http.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-base", "response_format": fmt},
                files={"file": ("a.wav", audio, "audio/wav")},
            )
            assert answer.status_code == 200, answer.text
            assert answer.text.startswith(start)
            assert answer.headers["content-type"].startswith("text/")


async def test_engine_errors(whisper: tuple[EngineStack, WhisperState]) -> None:
    stack, state = whisper
    state.control.fail = "failed to process audio"
    async with stack.http() as http:
        answer = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-base"},
            files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")},
        )
        assert answer.status_code == 502 and answer.json()["error"]["type"] == "upstream_error"
        assert "failed to process audio" in answer.json()["error"]["message"]
